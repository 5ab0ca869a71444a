"""The files a copy of this project needs to run its pipeline: what the tests' throwaway projects and the benchmarks'
project are built from (the rest of the repository is documentation, tests and tools)."""

PROJECT_FILES = [
    "stages",
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    ".dvcignore",
    ".gitignore",
]
