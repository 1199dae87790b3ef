"""Build hook only (metadata lives in setup.cfg): ship mappings/ and policies/ in the wheel.

The top-level ``mappings/`` and ``policies/`` stay the source of truth; ``build_py`` copies
them into ``listener/defaults/`` of the build, where ``listener.resources`` finds them in an
installed package. Editable installs skip the copy: they read the checkout's folders.
"""

from __future__ import annotations

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

DEFAULT_FOLDERS = ("mappings", "policies")


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


setup(cmdclass={"build_py": BuildPyWithDefaults})
