"""A configuration cannot silently shrink: every policy file must be there and hold something.

Each test copies the shipped mappings and policies to ``tmp_path``, damages one
file, and checks that ``build_pipeline(config)`` (what the daemon loads at start and
on SIGHUP) refuses it with a ConfigError naming that file.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from listener.assemble import build_pipeline
from listener.config import Config, load_config
from listener.errors import ConfigError
from listener.manifest import POLICY_FILES, TERM_FILES, check_required_files, check_terms_loaded

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path) -> Config:
    """A config whose mappings and policies are private copies of the shipped ones."""
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    path = tmp_path / "overread.yaml"
    path.write_text("mappings: mappings\npolicies: policies\n")
    return load_config(path)


def _required(config: Config) -> list[Path]:
    policies = config.policies_dir
    return [
        config.mappings_dir / "default.yaml",
        config.procedures_file,
        *(policies / n for n in POLICY_FILES),
        *(policies / "terms" / n for n in TERM_FILES),
    ]


def test_shipped_configuration_passes(config: Config) -> None:
    """The shipped files are complete: the check passes and the pipeline loads."""
    check_required_files(config)
    assert build_pipeline(config).decide_route is not None


@pytest.mark.parametrize("damage", ["delete", "empty", "comments_only", "empty_mapping"])
@pytest.mark.parametrize("index", range(len(POLICY_FILES) + len(TERM_FILES) + 2))
def test_each_required_file_missing_or_empty_is_refused(config: Config, damage: str, index: int) -> None:
    """Deleting or emptying any one required file is a ConfigError naming exactly that file."""
    target = _required(config)[index]
    if damage == "delete":
        target.unlink()
    else:
        target.write_text({"empty": "", "comments_only": "# emptied\n\n", "empty_mapping": "{}\n"}[damage])
    with pytest.raises(ConfigError) as info:
        build_pipeline(config)
    assert info.value.path == str(target)


def test_renamed_policies_directory_is_refused(config: Config) -> None:
    """Renaming policies/ must not fall back to the shipped vocabularies and no routing."""
    config.policies_dir.rename(config.policies_dir.with_name("policies.old"))
    with pytest.raises(ConfigError) as info:
        build_pipeline(config)
    assert info.value.path == str(config.policies_dir)


def test_missing_terms_directory_is_refused(config: Config) -> None:
    """Without policies/terms the loaders would quietly use the shipped vocabularies."""
    shutil.rmtree(config.policies_dir / "terms")
    with pytest.raises(ConfigError) as info:
        build_pipeline(config)
    assert info.value.path == str(config.policies_dir / "terms")


def test_term_file_with_the_wrong_vocabulary_is_refused(config: Config) -> None:
    """negation.yaml holding another category (or no triggers) is not a negation vocabulary."""
    negation = config.policies_dir / "terms" / "negation.yaml"
    negation.write_text("kind: modifiers\ncategory: uncertain\ntriggers: ['maybe']\n")
    with pytest.raises(ConfigError) as info:
        build_pipeline(config)
    assert info.value.path == str(negation) and info.value.line == 2 and "category: negated" in str(info.value)
    negation.write_text("kind: modifiers\ncategory: negated\ntriggers: []\n")
    with pytest.raises(ConfigError) as info:
        build_pipeline(config)
    assert info.value.path == str(negation) and info.value.line == 3


def test_a_term_file_lost_between_check_and_load_is_refused(config: Config) -> None:
    """The post-load check names a required vocabulary the loader did not read."""
    terms_dir = config.policies_dir / "terms"
    sources = [str(p) for p in sorted(terms_dir.glob("*.yaml")) if p.name != "negation.yaml"]
    with pytest.raises(ConfigError) as info:
        check_terms_loaded(sources, terms_dir)
    assert info.value.path == str(terms_dir / "negation.yaml")
    check_terms_loaded([*sources, str(terms_dir / "negation.yaml")], terms_dir)


def test_procedures_file_is_required(config: Config) -> None:
    """A missing CPT table used to disable every coding rule silently."""
    procedures = dataclasses.replace(config, procedures_file=config.mappings_dir / "nowhere.yaml")
    with pytest.raises(ConfigError) as info:
        build_pipeline(procedures)
    assert info.value.path.endswith("nowhere.yaml")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("# all commented out\n", "empty"),
        ("{}\n", "empty"),
        ("- mllp\n", "must be a mapping"),
        ("just a string\n", "must be a mapping"),
    ],
)
def test_empty_or_non_mapping_config_file_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    """An empty config file no longer means "all defaults": it is an error naming the file."""
    path = tmp_path / "overread.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path) and problem in str(info.value)
