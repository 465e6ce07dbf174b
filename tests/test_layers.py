"""The layer rules of pyproject.toml ([tool.importlinter]) hold for the code as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_command_line_starts_without_torch() -> None:
    # `xlir --help`, `xlir models` and a text search must not pay torch's seconds of import.
    code = "import sys, xlir_cli.main; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_xlir_models_loads_no_model_and_finds_cached_weights(tmp_path: Path) -> None:
    # `xlir models` answers from the registry and a look in the hub cache: no torch, no open_clip,
    # not even huggingface_hub. Weights laid out as the hub cache holds them count as offline.
    repo = tmp_path / "hf" / "hub" / "models--laion--CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "open_clip_model.safetensors").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    code = ("import json, sys\n"
            "from typer.testing import CliRunner\n"
            "from xlir_cli.main import app\n"
            "out = CliRunner().invoke(app, ['models', '--json']).stdout\n"
            "heavy = [m for m in ('torch', 'open_clip', 'transformers', 'huggingface_hub') if m in sys.modules]\n"
            "print(json.dumps({'heavy': heavy, 'rows': [json.loads(line) for line in out.splitlines()]}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "XDG_CACHE"))}
    env["HF_HOME"] = str(tmp_path / "hf")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["heavy"] == [], done.stderr
    ready = {r["id"]: r["offline_ready"] for r in found["rows"]}
    assert ready["xlm-roberta-base-ViT-B-32"] is True and ready["nllb-clip-base-siglip"] is False
    assert ready["conse-lite0-muse"] is True
