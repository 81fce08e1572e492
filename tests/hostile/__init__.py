"""Hostile input: property-based tests (hypothesis) of the public API and of the ``psm`` command line.

Every malformed input must end in a clear error:

* the API raises :class:`models.errors.InputError` with a one-line message (any other
  exception fails the test);
* ``psm`` (run in-process through :func:`inference.cli.main`) exits with code 2 and prints
  exactly one stderr line ``psm: error: ...``, no traceback, nothing on stdout, and leaves
  the folder around ``--out`` exactly as it was. Exit code 1 ("internal error", an
  unhandled exception) is a failure.

Inputs an example builds may also be valid; then the call must succeed and return what it
documents. The generators: arrays of every dtype and shape with out-of-range tokens, NaN
and infinities, empty and all-masked evidence, non-normalised and misshaped tables, huge,
negative and non-numeric sizes, unknown or mistyped config keys, and ``.npz``, ``.nc``,
checkpoint (``config.json``, ``model.safetensors``, ``.pt``) and TOML files that are
truncated at a random offset, have random bytes overwritten, or are random bytes.

Commands that would run for minutes on valid input (``psm run``, ``demo``, ``pretrain``,
``sbc``) get a stub in place of the expensive step: it loads what the command loads (the
base checkpoint) and then refuses with an :class:`InputError`, so the examples exercise
argument parsing, config and checkpoint loading and the output-folder guarantees only.

Hypothesis is derandomised (no example database, fixed seed), so the suite cannot flake.
``CASES`` counts the examples tried per target; the last test of each module prints its table and
checks that every target ran (``pytest tests/hostile -s`` shows it). One module per target group:
models, conditioning, configs, files, the command line, and the regressions the properties found.
"""
