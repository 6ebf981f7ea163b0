"""The docs cannot rot: their code samples run, their links resolve, the site builds strictly.

Every fenced ``python`` block in ``README.md`` and ``docs/**/*.md`` must compile. A block preceded
by an HTML comment marker is also used:

- ``<!-- test: file -->``: written into the page's scratch folder, named by its first line
  (``# tasks.py``), for the blocks after it to import;
- ``<!-- test: run -->``: written there too (named by its first line, or ``snippet_N.py``) and run
  with ``python`` in that folder, ``PGQ_DATABASE_URL`` pointing at this module's test database;
  it must exit 0 within ``RUN_TIMEOUT`` seconds.

Blocks without a marker are fragments (undefined names, ``...`` bodies) and are only compiled.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# The repository root, wherever in tests/ this file lives (the tiers may move it).
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "mkdocs.yml").exists())
DOCS = ROOT / "docs"
RUN_TIMEOUT = 60
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*test:\s*(run|file)\s*-->\s*$")
FILE_NAME = re.compile(r"#\s*([\w/]+\.py)\s*$")
# Pages whose examples must stay runnable (the minimum): quickstart, transactional
# enqueue, the beat schedule configuration.
MUST_RUN = {"docs/quickstart.md", "docs/guides/transactions.md", "docs/guides/periodic-tasks.md"}


@dataclass
class Block:
    page: str
    line: int
    code: str
    mode: str | None  # "run", "file" or None

    def file_name(self, index: int) -> str:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        named = FILE_NAME.match(first)
        return named.group(1) if named else f"snippet_{index}.py"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def python_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[: match.start()].rstrip("\n").splitlines()
        marker = MARKER.search(before[-1]) if before else None
        blocks.append(
            Block(
                page=path.relative_to(ROOT).as_posix(),
                line=text.count("\n", 0, match.start()) + 1,
                code=match.group(2),
                mode=marker.group(1) if marker else None,
            )
        )
    return blocks


ALL_BLOCKS = [block for page in pages() for block in python_blocks(page)]
RUNNABLE_PAGES = sorted({b.page for b in ALL_BLOCKS if b.mode == "run"})


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: f"{b.page}:{b.line}")
def test_python_block_compiles(block: Block) -> None:
    ast.parse(block.code, filename=f"{block.page}:{block.line}")


def test_the_key_examples_are_run() -> None:
    assert set(RUNNABLE_PAGES) >= MUST_RUN, "a `<!-- test: run -->` marker went missing"


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_examples_run(page: str, db_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGQ_", "CELERY_"))}
    env["PGQ_DATABASE_URL"] = db_url
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    for index, block in enumerate(b for b in python_blocks(ROOT / page) if b.mode):
        target = tmp_path / block.file_name(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code)
        if block.mode != "run":
            continue
        ran = subprocess.run(
            [sys.executable, target.name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert ran.returncode == 0, (
            f"{page}:{block.line} exited {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
        )


def test_readme_links_resolve() -> None:
    """mkdocs checks the site's links; this checks the README's relative ones (docs/..., files)."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_docs_build_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
