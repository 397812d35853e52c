"""The workflow on a real SLURM cluster, through the shipped profile (`slurm/config.yaml`).

A one-node SLURM cluster with one fake GPU is started on this machine for the module
(tests/slurm_cluster/cluster.sh: munged, slurmctld and slurmd on loopback, no accounting database)
and always stopped afterwards. It needs root (daemons, and apt to install slurm-wlm and munge
when missing); without root, or when apt cannot install the packages, the cluster tests skip.

The test profile is generated from slurm/config.yaml: only the site keys change (partitions,
account, status command, the first status check's delay), so the stage resources, GPU requests,
retries and attempt scaling under test are the shipped profile's own.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm_cluster" / "cluster.sh"
PROFILE = REPO / "slurm" / "config.yaml"
EXP = "digits"
GPU_STAGES = {"model", "explore", "groundtruth", "gallery", "audit", "rating_sheet", "mitigate", "reexplore", "probes"}
CPU_STAGES = {"landscape", "bias", "discovery", "feedback", "shift"}
# the stages a tiny run executes (groundtruth is off)
RUN_STAGES = {"model", "explore", "landscape", "gallery", "audit", "feedback", "mitigate", "reexplore", "probes", "shift"}
CPU_PARTITION, GPU_PARTITION = "debug", "gpu"  # tests/slurm_cluster/slurm.conf
# snakemake ignores SIGTERM while jobs run (it waits for them), hence `timeout -k`
RUN_TIMEOUT = 600
FLAKY_TIMEOUT = 240
# One torch thread per job, in the SLURM run and in the local run it is compared with (threads
# change floating-point reduction order, so both runs need the same number).
ONE_THREAD = ["--set-threads", "model=1", "explore=1", "explore_shard=1", "mitigate=1", "reexplore=1",
              "reexplore_shard=1", "probes=1", "audit=1"]


# --- the cluster ---------------------------------------------------------------------------------


class Cluster:
    def __init__(self, env: dict[str, str]):
        self.env = env

    def run(self, *cmd: str) -> str:
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=True,
                              timeout=60).stdout

    def job(self, jobid: str) -> dict[str, str]:
        """`scontrol show job` fields of one job (kept for MinJobAge=600 s after it ends)."""
        line = self.run("scontrol", "show", "job", "-o", jobid).strip()
        return dict(re.findall(r"(\S+?)=(\S*)", line))


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (it starts munged, slurmctld and slurmd, "
                    "and installs slurm-wlm and munge with apt when missing)")
    have_slurm = all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in ("slurmctld", "slurmd", "sbatch"))
    if not have_slurm and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install slurm-wlm and munge")
    try:
        proc = subprocess.run(["bash", str(CLUSTER_SH), "start"], capture_output=True, text=True, timeout=600)
        if proc.returncode == 4:
            pytest.skip(f"apt could not install slurm-wlm and munge: {proc.stderr.strip()[-1500:]}")
        if proc.returncode == 5:
            pytest.skip(f"not starting a test cluster over this machine's own SLURM: {proc.stderr.strip()[-500:]}")
        if proc.returncode != 0:
            pytest.fail(f"the SLURM test cluster did not start (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        # the cluster's config is /etc/slurm/slurm.conf; no SLURM_* variables from outside
        yield Cluster({k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))})
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "stop"], capture_output=True, text=True, timeout=120)


# --- the test profile: the shipped one with this cluster's site settings ---------------------------


def load_profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def is_gpu_stage(rule: str) -> bool:
    return bool(load_profile()["set-resources"].get(rule, {}).get("gpu"))


def first_attempt(rule: str, resource: str) -> int:
    """A stage's resource on its first attempt, from the profile (e.g. "4000 * attempt" -> 4000)."""
    prof = load_profile()
    expr = prof["set-resources"].get(rule, {}).get(resource, prof["default-resources"][resource])
    return eval(str(expr), {"attempt": 1})


def slurm_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def write_test_profile(dst: Path) -> Path:
    prof = copy.deepcopy(load_profile())
    prof["default-resources"].pop("slurm_account", None)
    prof["default-resources"]["slurm_partition"] = CPU_PARTITION
    for res in prof["set-resources"].values():
        res.pop("slurm_account", None)
        res["slurm_partition"] = GPU_PARTITION if res.get("gpu") else CPU_PARTITION
    prof.update({
        "slurm-no-account": True,                     # no accounting DB on the test cluster
        "slurm-status-command": "squeue",             # sacct needs one (it would hang for ever)
        "slurm-init-seconds-before-status-checks": 1,  # default 40 s
    })
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dst


# --- a tiny experiment (as in tests/test_workflow.py, smaller still) ------------------------------

BUDGET = 512


def tiny_config() -> dict:
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    exp = copy.deepcopy(shipped["experiments"][EXP])
    exp["model"]["epochs"] = 1
    exp["explore"]["budget"] = BUDGET
    exp["explore"]["num_agents"] = 32
    exp["explore"]["groundtruth"] = False
    exp["mitigate"]["epochs"] = 1
    return {"experiments": {EXP: exp}}


def make_workdir(workdir: Path, cfg: dict) -> Path:
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    feedback = Path(cfg["experiments"][EXP]["feedback"])
    (workdir / feedback).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / feedback, workdir / feedback)
    return workdir


def snakemake_cmd(exe: Path, workdir: Path, *args: str, timeout: int | None = None) -> list[str]:
    cmd = [str(exe), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config" / "config.yaml"), *args]
    return ["timeout", "-k", "10", str(timeout), *cmd] if timeout else cmd


def failure_report(proc, workdir: Path) -> str:
    logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                     for p in sorted(workdir.rglob("*.log")) if p.is_file())
    return (f"rc {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-8000:]}\n"
            f"LOGS:\n{logs[-8000:]}")


def submissions(output: str) -> list[tuple[str, str, str]]:
    """(rule, SLURM job id, sbatch command line) of every job the plugin submitted, from its
    'sbatch call: …' (logged with --verbose; the --wrap payload left out) and 'submitted with
    SLURM jobid N (log: …/rule_<rule>/<wildcards>/N.log)' lines, paired by log folder."""
    calls: dict[str, list[str]] = {}
    for call in re.findall(r"sbatch call: (sbatch .*?) --wrap=", output):
        folder = re.search(r"--output '?(\S+?)/%j\.log", call).group(1)
        calls.setdefault(folder, []).append(call)
    subs = []
    for jobid, log in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)", output):
        folder = log.rsplit("/", 1)[0]
        rule = re.search(r"/slurm_logs/rule_(\w+)/", log).group(1)
        subs.append((rule, jobid, calls[folder].pop(0)))
    return subs


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [None, 2])
def test_profile_dry_run_requests_gpus_for_gpu_stages_only(tmp_path, snakemake_exe, shards):
    """`snakemake --profile slurm -n` on the shipped config (and with explore.shards: 2, which adds
    the *_shard rules): every stage has its profile entry; GPU stages on the GPU partition with one
    GPU, CPU stages on the CPU partition without. Needs no cluster (and no root)."""
    prof = load_profile()
    assert prof["executor"] == "slurm"
    assert set(prof["set-resources"]) >= GPU_STAGES | CPU_STAGES
    work = tmp_path / "dry"
    shutil.copytree(REPO / "config", work / "config")
    shutil.copytree(REPO / "resources" / "feedback", work / "resources" / "feedback")
    if shards:
        cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
        for exp in cfg["experiments"].values():
            exp["explore"]["shards"] = shards
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    proc = subprocess.run([str(snakemake_exe), "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "slurm"),
                           "-n", "--cores", "2"], cwd=work, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    resources = dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, flags=re.M))
    assert set(resources) >= RUN_STAGES, sorted(resources)
    if shards:
        assert {"explore_shard", "reexplore_shard"} <= set(resources), sorted(resources)
    uncovered = set(resources) - {"all"} - set(prof["set-resources"])
    assert not uncovered, f"stages missing from slurm/config.yaml set-resources: {sorted(uncovered)}"
    gpu_partition = prof["set-resources"]["model"]["slurm_partition"]
    cpu_partition = prof["default-resources"]["slurm_partition"]
    assert gpu_partition != cpu_partition
    assert all(prof["set-resources"][rule].get("gpu") == 1 for rule in GPU_STAGES)
    assert not any(prof["set-resources"][rule].get("gpu") for rule in CPU_STAGES)
    for rule, res in resources.items():
        if rule == "all":
            continue
        if is_gpu_stage(rule):
            assert "gpu=1" in res.split(", "), (rule, res)
            assert f"slurm_partition={gpu_partition}" in res, (rule, res)
            # the rule's threads (the gallery's one: it draws a few images)
            assert f"cpus_per_task={1 if rule == 'gallery' else 2}" in res, (rule, res)
        else:
            assert "gpu=" not in res, (rule, res)
            assert f"slurm_partition={cpu_partition}" in res, (rule, res)


def test_workflow_runs_through_slurm_like_locally(cluster, tmp_path, snakemake_exe):
    cfg = tiny_config()
    local = make_workdir(tmp_path / "local", cfg)
    onslurm = make_workdir(tmp_path / "slurm", cfg)
    profile = write_test_profile(tmp_path / "profile")

    # The local reference run goes alongside the SLURM run (which mostly waits on the scheduler).
    local_proc = subprocess.Popen(snakemake_cmd(snakemake_exe, local, "--cores", "2", "-q", *ONE_THREAD,
                                                timeout=RUN_TIMEOUT),
                                  cwd=local, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    proc = subprocess.run(snakemake_cmd(snakemake_exe, onslurm, "--profile", str(profile), "--verbose", *ONE_THREAD,
                                        timeout=RUN_TIMEOUT),
                          cwd=onslurm, env=cluster.env, capture_output=True, text=True)
    slurm_seconds = time.monotonic() - t0
    local_out, local_err = local_proc.communicate(timeout=RUN_TIMEOUT + 30)
    assert proc.returncode == 0, failure_report(proc, onslurm)
    assert local_proc.returncode == 0, f"local run rc {local_proc.returncode}\n{local_out[-3000:]}\n{local_err[-5000:]}"
    out = proc.stdout + proc.stderr
    print(f"SLURM run: {slurm_seconds:.0f} s")

    # every stage ran as a SLURM job (`all` is a local rule), and SLURM saw each one complete
    # (no failed first attempts)
    subs = submissions(out)
    assert {rule for rule, _, _ in subs} >= RUN_STAGES, subs
    listed = dict(line.split("|") for line in cluster.run("squeue", "--states=all", "--noheader",
                                                          "--format=%i|%T").split())
    for rule, jobid, _ in subs:
        assert listed.get(jobid) == "COMPLETED", (rule, jobid, listed)

    # what each job asked SLURM for: GPU stages one GPU on the GPU partition, CPU stages none
    for rule, jobid, call in subs:
        job = cluster.job(jobid)
        print(f"{rule}: {call}\n    scontrol: Partition={job['Partition']} TRES={job['TRES']} "
              f"TresPerJob={job.get('TresPerJob', '')} TimeLimit={job['TimeLimit']} Comment={job['Comment']} "
              f"Submit={job['SubmitTime']} Start={job['StartTime']} End={job['EndTime']}")
        assert job["Comment"].startswith(f"rule_{rule}_wildcards_{EXP}"), job["Comment"]
        assert job["WorkDir"] == str(onslurm)
        if is_gpu_stage(rule):
            assert job["Partition"] == GPU_PARTITION, (rule, job)
            assert job.get("TresPerJob") == "gres:gpu:1", (rule, job)
            assert " --gpus=1" in call, call
        else:
            assert job["Partition"] == CPU_PARTITION, (rule, job)
            assert "gpu" not in job.get("TresPerJob", ""), (rule, job)
            assert "--gpus" not in call and "--gres" not in call, call
        assert "--cpus-per-task=1" in call, call  # cpus_per_task: threads (set to 1 above)
        assert job["MinMemoryNode"] == f"{first_attempt(rule, 'mem_mb')}M", (rule, job)
        assert job["TimeLimit"] == slurm_minutes(first_attempt(rule, "runtime")), (rule, job)

    # the rules' logs and SLURM's own job logs are where the README says (SLURM's are deleted
    # once a job succeeds)
    for rule, jobid, _ in subs:
        assert list((onslurm / "logs" / EXP).glob(f"{rule}*.log")), rule
        assert re.search(rf"\(log: {re.escape(str(onslurm))}/\.snakemake/slurm_logs/rule_{rule}/{EXP}\w*/{jobid}\.log\)",
                         out), rule

    # the same numbers as the local run (same config and seed, same machine)
    res_slurm, res_local = onslurm / "results" / EXP, local / "results" / EXP
    shift_slurm = json.loads((res_slurm / "shift" / "shift.json").read_text())
    shift_local = json.loads((res_local / "shift" / "shift.json").read_text())
    assert shift_slurm == shift_local
    for stage in ("explore", "reexplore"):
        q_slurm = pl.read_parquet(res_slurm / stage / "queries.parquet")
        q_local = pl.read_parquet(res_local / stage / "queries.parquet")
        assert q_slurm.height == BUDGET
        assert q_slurm.equals(q_local), stage


FLAKY_SNAKEFILE = """\
# Fails on its first attempt and succeeds on the second. Nothing of failfade's is included.
rule all:
    input:
        "flaky.txt",


rule flaky:
    output:
        "flaky.txt",
    log:
        "flaky.log",
    resources:
        gpu=0,  # what failfade's GPU stages declare when the config says gpus: 0
    params:
        marker="attempt1.failed",
    shell:
        "if [ ! -e {params.marker} ]; then touch {params.marker}; "
        "echo 'failing on purpose' > {log}; exit 1; fi; "
        "echo mem_mb={resources.mem_mb} runtime={resources.runtime} > {output}"
"""


def test_failed_job_is_retried_with_more_resources(cluster, tmp_path, snakemake_exe):
    work = tmp_path / "flaky"
    work.mkdir()
    (work / "Snakefile").write_text(FLAKY_SNAKEFILE)
    profile = write_test_profile(tmp_path / "profile")
    proc = subprocess.run(["timeout", "-k", "10", str(FLAKY_TIMEOUT), str(snakemake_exe), "--profile", str(profile),
                           "--retries", "1", "--verbose"],
                          cwd=work, env=cluster.env, capture_output=True, text=True)
    assert proc.returncode == 0, failure_report(proc, work)
    out = proc.stdout + proc.stderr
    subs = submissions(out)
    assert [rule for rule, _, _ in subs] == ["flaky", "flaky"], subs
    first, second = (cluster.job(jobid) for _, jobid, _ in subs)
    assert first["JobState"] == "FAILED", first
    assert second["JobState"] == "COMPLETED", second
    # the profile's default-resources scale with the attempt (mem_mb: 2000 * attempt, runtime: 30 * attempt)
    base = load_profile()["default-resources"]
    assert base["mem_mb"] == "2000 * attempt" and base["runtime"] == "30 * attempt"
    assert (first["MinMemoryNode"], second["MinMemoryNode"]) == ("2000M", "4000M")
    assert (first["TimeLimit"], second["TimeLimit"]) == ("00:30:00", "01:00:00")
    assert (work / "flaky.txt").read_text().split() == ["mem_mb=4000", "runtime=60"]
    # gpu=0 asks SLURM for nothing: no --gpus, and a CPU job's --ntasks
    for _, _, call in subs:
        assert "--gpus" not in call and "--gres" not in call, call
        assert f"-p {CPU_PARTITION}" in call and "--ntasks=1" in call, call
        print("flaky rule:", call)
    # the failed attempt's SLURM log is kept (a successful job's is deleted)
    slurm_logs = {p.stem for p in (work / ".snakemake" / "slurm_logs" / "rule_flaky").rglob("*.log")}
    assert subs[0][1] in slurm_logs, slurm_logs


def test_every_stage_gets_its_rules_own_time_on_the_first_attempt(repo_root):
    """The profile's comment promises the first attempt the rule's own `runtime` (paper_scalability
    once got 30 of its 60 minutes): every rule that asks for a runtime gets exactly that at attempt 1."""
    asked = {}
    for smk in sorted((repo_root / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t].*\n|\n)*)", smk.read_text(), flags=re.M):
            m = re.search(r"^\s*runtime=(\d+),", body, flags=re.M)
            if m:
                asked[name] = int(m.group(1))
    assert {"model", "explore", "paper_scalability", "paper_strategies", "shift"} <= set(asked), asked
    got = {rule: first_attempt(rule, "runtime") for rule in asked}
    assert got == asked
