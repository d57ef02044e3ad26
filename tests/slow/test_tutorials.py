"""Every command of the tutorials runs, page after page in the site's order, in one folder that holds the files
the pages name (a user's images, an annotated dataset, a slide): the pages cannot drift from the code.

What differs from a user's run, and why (one table, :data:`SHORTER`): training commands run one epoch of two
steps instead of their time budget (this test checks that the commands run and chain; the demo's Dice and
``make bench-pretrained`` measure how well they train). Commands that need what this machine lacks (several
GPUs or machines, a running Dask scheduler) are parsed by unetkit's own parser instead, so a renamed flag still
fails; ``make``/``pip`` lines are checked against the Makefile (CI runs them itself). A console block's shown
output (``$ command`` then its lines) must match what the command prints, line by line, by its first word.

The Python blocks are run by ``test_readme.py`` and ``integration/test_docs.py``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from unetkit import read_image, synth_nuclei, synthesize_dataset, write_image
from unetkit.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
#: the pages with commands, in the site's order (later pages use what earlier ones made: ``run/``)
PAGES = (
    "README.md",
    "docs/getting-started.md",
    "docs/pretrained.md",
    "docs/data.md",
    "docs/train.md",
    "docs/fine-tune.md",
    "docs/predict.md",
    "docs/sharing.md",
    "docs/scale-out.md",
)
#: placeholders the reference pages write in capitals, and what this folder holds for them
PLACEHOLDERS = {"RUN": "run", "IMAGES": "images", "PRED": "pred", "OME": "ome", "DATA": "my_annotated_data"}
#: appended to every `unetkit train` (its --time-budget removed): one short epoch
SHORTER = ["--epochs", "1", "--steps-per-epoch", "2"]
#: commands run only through the parser: they need hardware or services this machine has not
PARSE_ONLY = (
    ("torchrun", "several GPUs or machines"),
    ("tcp://", "a running Dask scheduler"),
    ("/shared/", "a shared file system"),
)


@dataclass
class Command:
    page: str
    text: str
    shown: list[str]  # the output a console block shows under it


def commands(page: str) -> list[Command]:
    """The commands of a page's ``bash`` blocks and ``$``-prompted console blocks, continuation lines joined,
    ``&&`` chains split, comments dropped."""
    found = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", (ROOT / page).read_text(), re.S):
        if lang == "bash":
            body = re.sub(r"\\\n\s*", " ", body)
            lines = [(line, []) for line in body.splitlines() if not line.lstrip().startswith("#")]
        elif lang == "" and body.startswith("$ "):
            lines, shown = [], None
            for line in body.splitlines():
                if line.startswith("$ "):
                    shown = []
                    lines.append((line[2:], shown))
                elif shown is not None:
                    shown.append(line)
        else:
            continue
        for line, shown in lines:
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                found.append(Command(page, shlex.join(words[:cut]), shown))
                words = words[cut + 1 :]
    return found


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """What a user brings to the tutorials: images, an annotated dataset, a slide (nothing unetkit made), and
    ``run/``, the run a reader brings from the Train tutorial (given only to pages that use it before making it)."""
    home = tmp_path_factory.mktemp("tutorials")
    write_image(home / "image.tif", synth_nuclei((256, 256), seed=1)[0])
    for name, n in (("images", 2), ("my_images", 2), ("more", 1)):
        for i in range(n):
            write_image(home / name / f"img{i}.tif", synth_nuclei((256, 256), seed=10 + i)[0])
    write_image(home / "slide.tif", synth_nuclei((512, 512), seed=2)[0])
    write_image(home / "big.tif", synth_nuclei((512, 512), seed=3)[0])
    _stains(home / "stains")
    large = synthesize_dataset(home / "large", n=1, size=512, seed=4, style="large")
    write_image(home / "big_nuclei.tif", read_image(large / "images" / "synth_000.png"))
    shutil.rmtree(large)
    synthesize_dataset(home / "my_annotated_data", n=6, size=192, seed=5)
    synthesize_dataset(home / "cells", n=8, size=192, seed=6)
    _slide_stores(home, synth_nuclei((512, 512), seed=7)[0])
    _problem_dataset(home / "mydata")
    done = subprocess.run(
        [_exe(), "train", "cells", "--out", "run", "--no-plan", *SHORTER, "--no-progress"],
        cwd=home, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def _exe() -> str:
    return str(Path(sys.executable).with_name("unetkit"))


def _stains(folder: Path) -> None:
    """Two-channel microscopy files as Fiji saves them (an ImageJ hyperstack, channels first): a marker, then DAPI."""
    import tifffile

    folder.mkdir()
    for i in range(2):
        dapi = synth_nuclei((256, 256), seed=30 + i)[0].astype(np.uint16) * 100
        marker = np.random.default_rng(i).integers(0, 2000, dapi.shape).astype(np.uint16)
        tifffile.imwrite(
            folder / f"s{i}.tif", np.stack([marker, dapi]), imagej=True, metadata={"axes": "CYX"}
        )


def _slide_stores(home: Path, image: np.ndarray) -> None:
    """``slide.zarr`` (a plain zarr array) and ``slide.ome.zarr`` (a pyramid of three levels)."""
    import zarr
    from ome_zarr.writer import write_image as write_ome_image

    zarr.open_array(
        str(home / "slide.zarr"), mode="w", shape=image.shape, chunks=(256, 256), dtype=image.dtype
    )[:] = image
    write_ome_image(
        image, zarr.open_group(str(home / "slide.ome.zarr"), mode="w"), scale_factors=[2, 4], axes="yx"
    )


def _problem_dataset(root: Path) -> None:
    """The dataset data.md checks: an image without its mask (cell7), a mask with values outside its class map
    (cell3: 255), an image smaller than the training patch (cell1)."""
    root.mkdir()
    (root / "dataset.yaml").write_text("classes: {0: background, 1: nucleus}\n")
    for name, shape in (("cell1", (200, 180)), ("cell3", (256, 256)), ("cell7", (256, 256))):
        image, labels = synth_nuclei(shape, seed=len(name) + int(name[-1]))
        write_image(root / "images" / f"{name}.png", image)
        if name != "cell7":
            mask = (labels > 0).astype(np.uint8)
            if name == "cell3":
                mask[:8, :8] = 255
            write_image(root / "masks" / f"{name}.png", mask)


def _check_setup_line(words: list[str]) -> str:
    makefile = (ROOT / "Makefile").read_text()
    if words[0] == "make":
        for target in words[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"make {target}: no such target"
        return "a Makefile target (CI runs `make test` itself)"
    pins = re.findall(r"torch==[\w.+]+", " ".join(words))
    assert all(pin in makefile for pin in pins), f"{words}: torch pinned unlike the Makefile"
    assert "torch" not in " ".join(words) or pins, f"{words}: an unpinned torch (a multi-GB CUDA build)"
    return "set-up as the Makefile does it"


def _parse_only(words: list[str]) -> None:
    argv = words[words.index("unetkit") + 1 :] if "unetkit" in words else words[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        raise AssertionError(f"unetkit {shlex.join(argv)}: the parser refused it") from exc


def _run(cmd: Command, cwd: Path) -> str:
    words = [PLACEHOLDERS.get(w, w) for w in shlex.split(cmd.text)]
    if words[0] == "make" or Path(words[0]).name in ("python3", "pip"):
        return _check_setup_line(words)
    why = next((why for marker, why in PARSE_ONLY if marker in cmd.text), None)
    if why:
        _parse_only(words)
        return f"parsed only: needs {why}"
    if words[:2] == ["unetkit", "demo"]:
        words += ["--epochs", "1"]  # as a training command: the demo's own test checks its Dice
    if words[:2] == ["unetkit", "train"]:
        if "--time-budget" in words:
            at = words.index("--time-budget")
            del words[at : at + 2]
        words += SHORTER
    if words[0] == "unetkit":
        words = [_exe(), *words[1:], *(["--no-progress"] if _progress(words) else [])]
    done = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=600, env=os.environ)
    refused = any("would be refused" in line for line in cmd.shown)  # check-data shows problems: exit code 1
    assert done.returncode == (1 if refused else 0), (
        f"{cmd.page}: `{cmd.text}` exit code {done.returncode}:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    )
    printed = (done.stdout + done.stderr).splitlines()
    for line in cmd.shown:  # the page shows output: each shown line's first word starts a printed line
        first = line.split()[0] if line.split() else ""
        if first and first not in ("...", "[...]"):
            assert any(p.split()[:1] == [first] for p in printed), (
                f"{cmd.page}: `{cmd.text}` no longer prints {line!r}"
            )
    return "ran"


def _progress(words: list[str]) -> bool:
    """Whether the command takes --no-progress (the logs stay readable in a failure message)."""
    action = next((a for a in build_parser()._actions if a.dest == "command"), None)
    sub = action.choices.get(words[1]) if action else None
    return sub is not None and any("--no-progress" in a.option_strings for a in sub._actions)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_page_runs(page, inputs, tmp_path):
    """Each page in a copy of the user's folder (a reader may start at any page)."""
    found = commands(page)
    assert found, f"{page}: no commands found (the block syntax changed?)"
    folder = tmp_path / "work"
    # what the page makes itself (a dataset, `run`) is not brought
    made = {m for c in found for m in re.findall(r"(?:unetkit synth|--out) ([\w.-]+)", c.text)}
    shutil.copytree(
        inputs, folder, ignore=lambda d, names: [n for n in names if n in made] if Path(d) == inputs else []
    )
    for cmd in found:
        _run(cmd, folder)
