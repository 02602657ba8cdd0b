"""The one place that defines absl flags for every bgan_tf binary.

One module per binary family (train_flags, eval_flags, search_flags, export_flags)
holds a ``define_*_flags()`` that the binary calls at run time, before parsing, and
helpers that turn the parsed flags into what the library takes (a config, backend
knobs). The flags several binaries share are defined once, with one meaning, in
``flags.common``; lists of allowed values are imported from the library that owns them.
"""
