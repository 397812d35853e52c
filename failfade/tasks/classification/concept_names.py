"""The classification transforms' names and level ranges, without their kernels (transforms.py).

Reading a config checks its axes against these; this module imports nothing heavy, so that
`snakemake -n` and `failfade run` validate a config without importing torch.
"""

from __future__ import annotations

INF = float("inf")

# a concept's `transform:` name -> the kernel in transforms.py that applies it
KERNELS = {
    "rotate": "rotate",
    "rotation": "rotate",
    "gaussian_blur": "gaussian_blur",
    "blur": "gaussian_blur",
    "contrast": "contrast",
    "darken": "darken",
    "saturation": "saturation",
    "saturate": "saturation",
    "occlude": "occlude",
    "occlusion": "occlude",
}

# levels that mean something: a negative blur or contrast, or an occlusion past the whole image, do not
LEVEL_RANGES = {"gaussian_blur": (0.0, INF), "blur": (0.0, INF), "contrast": (0.0, INF), "saturation": (0.0, INF),
                "saturate": (0.0, INF), "occlude": (0.0, 1.0), "occlusion": (0.0, 1.0), "darken": (-INF, 1.0)}
