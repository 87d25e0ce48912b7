"""The fixed code of the generated scripts, as real modules: `common`
(framework-neutral: data, runs, plots, reports), `keras`, `torch`, and `rules`, the
rules the compiler shares with the scripts (same padding, weight layouts, the legacy .h5
reader), which imports nothing and which the checker and the importer import. The
backends copy definitions from these files into the scripts by name
(cnnspec.backends.runtime); nothing imports common, keras or torch at run time, and
importing `cnnspec.runtime` imports no framework.

`script` stands in for what each script defines at its top from the spec (SEED,
INPUT_SHAPE, ...), so that the linter and the type checker see every name the copied
code uses."""
