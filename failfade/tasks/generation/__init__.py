"""Text-to-image generation (diffusers): the third task family, in progress.

pipeline.py   sources (hf: snapshot, path: folder), the Stable Diffusion folder layout, one seeded
              DDIM sampler with classifier-free guidance
judges.py     what decides a failure: the CLIP judge (image–prompt cosine below a threshold)
task.py       GenerationTask: a cell is a prompt (word axes fill a template), an input is a seed

Not yet registered in tasks/family.py: the builtin model, the classifier judge, the rating sheet
and LoRA mitigation come next (see the README's "Text-to-image" section).
"""
