"""The README and docs/: every relative link points to a file that exists, every file the README's file list
names exists, and the README stays a two-minute read."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + [
    os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs"))) if f.endswith(".md")
]


def test_every_relative_link_points_to_a_file():
    broken = []
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target.split("#")[0]))
            if not os.path.exists(path):
                broken.append(f"{page}: {target}")
    assert not broken


def test_the_readme_file_list_names_what_is_there():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    listing = text.split("## Files", 1)[1].split("```")[1]
    named = [line.split()[0] for line in listing.strip().splitlines() if line and not line.startswith(" ")]
    assert {"collect.py", "extract.py", "distill.py", "evaluate.py", "loop.sh", "oel/", "tests/"} <= set(named)
    assert [n for n in named if not os.path.exists(os.path.join(ROOT, n))] == []
    assert len(text.splitlines()) <= 150
