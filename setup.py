"""The one part of the build pyproject.toml cannot declare yet (setuptools calls its ext-modules table
experimental): the OTLP JSON-lines reader in C, analyzer/load/_otlp_native.c. It is optional: without a C compiler
the install still succeeds, and those files take the Python reader (slower, the same rows)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "jitrace.analyzer.load._otlp_native",
            sources=["analyzer/load/_otlp_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
