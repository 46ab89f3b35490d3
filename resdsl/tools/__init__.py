"""Tools built on the pipeline: ``analysis`` (``info --report``), ``diff``, ``draw`` and the
formatter ``fmt``. Each reads a spec or an elaborated ``Graph``/``Network`` and reports or
rewrites it; none is a stage of compilation, and the pipeline never imports them (the
layers of docs/architecture.md, checked by ``lint-imports``)."""
