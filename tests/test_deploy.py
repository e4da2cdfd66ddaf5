"""The deployment files parse and start the same torchrun entry point."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

DOCKER_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, joining continuation lines and dropping comments."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        assert keyword.upper() in DOCKER_INSTRUCTIONS, f"Dockerfile line {number}: unknown instruction {keyword!r}"
        assert args.strip(), f"Dockerfile line {number}: {keyword} without arguments"
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_parses_and_runs_torchrun_on_cuda():
    instructions = dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
    non_arg = [i for i in instructions if i[0] != "ARG"]
    assert non_arg[0][0] == "FROM" and non_arg[0][1].startswith("nvidia/cuda:")
    for kind, args in instructions:
        if kind in ("ENTRYPOINT", "CMD", "VOLUME") and args.startswith("["):
            json.loads(args)  # exec form must be a JSON array
    entry = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entry == ["torchrun"]
    assert "-m" in json.loads(dict(instructions)["CMD"])
    copied = {args.split()[0] for kind, args in instructions if kind == "COPY"}
    assert {"bigkg", "launcher", "partitioner"} <= copied
    for src in copied:
        assert (DEPLOY.parent / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_kubernetes_manifest_is_a_pytorchjob_on_a_shared_volume():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "pytorchjob.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    job = kinds["PyTorchJob"]
    assert job["spec"]["elasticPolicy"]["rdzvBackend"] == "c10d"
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["-m", "launcher"]
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["name"] for m in container["volumeMounts"]}
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == claim and n in mounted for n, v in volumes.items())


def test_sbatch_script_is_valid_bash_running_torchrun_with_c10d():
    script = DEPLOY / "slurm" / "train.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    torchrun = text[text.index("torchrun \\"):]
    words = shlex.split(torchrun.replace("\\\n", " "))
    assert words[words.index("--rdzv-backend") + 1] == "c10d"
    assert words[words.index("-m") + 1] == "launcher"
    assert "srun" in text
