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


def test_the_method_changes_still_hit_their_code_and_name_real_tests():
    """tests/mutants.py is run by hand; here, cheaply, that each of its changes still finds its text (once) in its
    file, that each test it names exists, and that tests/README.md names only real tests and real changes."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import mutants

    assert len(mutants.MUTANTS) >= 20
    assert mutants.check_entries(mutants.MUTANTS) == []
    broken = dict(mutants.MUTANTS[0], old="text that is nowhere in the file")
    assert mutants.check_entries([broken]) == [
        f"{broken['name']}: its text occurs 0 times in distill.py, expected once"
    ]

    def defined(path, name=None):
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            return name is None or re.search(rf"^def {name}\(", f.read(), re.M) is not None

    missing = [t for m in mutants.MUTANTS for t in m["tests"] if not defined(*t.split("::"))]
    assert missing == []

    with open(os.path.join(ROOT, "tests", "README.md"), encoding="utf-8") as f:
        page = f.read()
    sources = ""
    for name in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if name.startswith("test_") and name.endswith(".py"):
            with open(os.path.join(ROOT, "tests", name), encoding="utf-8") as f:
                sources += f.read()
    named = set(re.findall(r"`(test_\w+)`", page))
    assert named and [t for t in named if not re.search(rf"^def {t}\(", sources, re.M)] == []
    changes = {m["name"] for m in mutants.MUTANTS}
    table_changes = {c.strip() for row in re.findall(r"\| ([a-z0-9, -]*) \|\n", page) for c in row.split(",")}
    assert table_changes - {"", "change caught"} == changes
