"""Coverage-guided fuzzing of the pure layers (atheris); see fuzz/README.md."""
