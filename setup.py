"""Build hook only (metadata lives in setup.cfg): ship mappings/ and policies/ in the wheel, compile the hot modules.

The top-level ``mappings/`` and ``policies/`` stay the source of truth; ``build_py`` copies
them into ``listener/defaults/`` of the build, where ``listener.resources`` finds them in an
installed package. Editable installs skip the copy: they read the checkout's folders.

The modules listed in ``mypyc-modules.txt`` are compiled to C extensions with mypyc
(docs/development.md, "Compiled modules"); with ``OVERREAD_MYPYC=0``, or without mypyc or a
working C compiler, the build installs pure Python (saying so in one line when it tried).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

DEFAULT_FOLDERS = ("mappings", "policies")
HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_LIST = "mypyc-modules.txt"
#: The mypy options of the mypyc build on top of pyproject.toml's: an isolated build environment
#: holds setuptools and mypy only, so the third-party packages the listed modules reach are Any
#: there (a subclass of one, a `type: ignore` then unused: not errors). `make typecheck` is the check.
MYPYC_OPTIONS = ["--ignore-missing-imports", "--allow-subclassing-any", "--no-warn-unused-ignores"]
#: The name of the shared library of the compiled modules (``overread__mypyc.*.so``).
GROUP = "overread"
#: The commands that build extensions; any other (egg_info, dist_info) needs no mypyc run.
BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


class BuildPyWithDefaults(build_py):
    """``build_py`` plus the default folders as package data under ``listener/defaults``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in DEFAULT_FOLDERS:
            target = os.path.join(self.build_lib, "listener", "defaults", name)
            shutil.rmtree(target, ignore_errors=True)  # a reused build/ must not keep deleted files
            self.copy_tree(name, target)


def say(line: str) -> None:
    """One line on stderr (pip shows a build's stderr with -v, and on failure)."""
    print(f"overread setup: {line}", file=sys.stderr, flush=True)


def compiled_sources() -> list[str]:
    """The .py files ``mypyc-modules.txt`` lists, relative to the repository, sorted."""
    found: set[str] = set()
    with open(os.path.join(HERE, MODULE_LIST), encoding="utf-8") as listed:
        for line in listed:
            pattern = line.split("#", 1)[0].strip()
            if pattern:
                found.update(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    return sorted(found)


class BuildExtOrPure(build_ext):
    """``build_ext`` that falls back to pure Python (removing what it half built) when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001  # any failure of the compiler: the pure modules remain
            self._remove_built()
            say(f"compiling with mypyc failed ({type(error).__name__}: {error}); pure Python installed")

    def _remove_built(self) -> None:
        for ext in self.extensions:
            for path in (self.get_ext_fullpath(ext.name), os.path.join(HERE, self.get_ext_filename(ext.name))):
                if os.path.exists(path):
                    os.remove(path)


def remove_inplace() -> None:
    """Delete the compiled modules an in-place build left in the checkout (they would shadow the .py)."""
    for source in compiled_sources():
        for built in glob.glob(os.path.join(HERE, source[: -len(".py")] + ".*.so")):
            os.remove(built)
    for built in glob.glob(os.path.join(HERE, f"{GROUP}__mypyc.*.so")):
        os.remove(built)


def extensions() -> list[object]:
    """The mypyc extensions, or none (pure Python) when asked so or when mypyc cannot be had."""
    if not BUILDING.intersection(sys.argv[1:]):
        return []  # metadata only (egg_info, dist_info): no need to run mypy
    if os.environ.get("OVERREAD_MYPYC", "") == "0":
        remove_inplace()  # pure Python asked for: no compiled module may shadow a .py
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        say("mypyc is not installed; pure Python installed")
        return []
    # mypyc prints a line per note ("Treating generator comprehension as list": the same values,
    # built at once) on stdout: kept out of an install's output unless the translation fails.
    notes = io.StringIO()
    try:
        with contextlib.redirect_stdout(notes):
            return list(mypycify([*MYPYC_OPTIONS, *compiled_sources()], opt_level="3", group_name=GROUP))
    except (Exception, SystemExit) as error:  # noqa: BLE001  # mypy's errors end in SystemExit
        sys.stderr.write(notes.getvalue())
        say(f"mypyc could not translate the modules ({error}); pure Python installed")
        return []


setup(
    cmdclass={"build_py": BuildPyWithDefaults, "build_ext": BuildExtOrPure},
    ext_modules=extensions(),
)
