"""What pyproject.toml cannot declare: the packages, found from the folders, and the optional C reader.

Each top-level folder of the pipeline is a package under ``jitrace`` (``collect/`` is ``jitrace.collect``); every folder
inside it is a subpackage, with its data files (SQL, CSV, TOML, proto, policies). Found here rather than listed, so a
new folder cannot silently miss the wheel (tests/test_install.py checks the wheel against the tree).

The C readers, of OTLP JSON-lines files (analyzer/load/_otlp_native.c) and of OTLP/protobuf trace requests
(analyzer/otlp/_protobuf_native.c), are optional: without a C compiler the install still succeeds, and their inputs
take the Python readers (slower, the same rows).
"""

from pathlib import Path

from setuptools import Extension, setup

ROOTS = ("instrumentation", "collect", "analyzer", "queries", "lab")
DATA = ["*.sql", "*.csv", "*.toml", "*.proto", "*.conf"]


def packages() -> dict[str, str]:
    """{package: folder} for every folder under ROOTS that holds files (caches and hidden folders left out)."""
    found = {}
    for root in ROOTS:
        for folder in [Path(root), *sorted(p for p in Path(root).rglob("*") if p.is_dir())]:
            if any(part.startswith((".", "__")) for part in folder.parts) or not any(folder.iterdir()):
                continue
            found[".".join(["jitrace", *folder.parts])] = folder.as_posix()
    return found


setup(
    packages=list(packages()),
    package_dir=packages(),
    package_data={name: DATA for name in packages()},
    ext_modules=[
        Extension(
            "jitrace.analyzer.load._otlp_native",
            sources=["analyzer/load/_otlp_native.c"],
            depends=["analyzer/_arrow_buffers.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "jitrace.analyzer.otlp._protobuf_native",
            sources=["analyzer/otlp/_protobuf_native.c"],
            depends=["analyzer/_arrow_buffers.h"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ],
)
