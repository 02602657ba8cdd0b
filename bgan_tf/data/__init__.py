"""Images in: decoding, folder listing, data sources, the training pipeline, features.

- `images`: the one decoder (`decode_image_bytes`, `load_image_file`: the pixel budget is
  read from the header before decoding; 16-bit, grey and alpha handled) and the one
  folder lister (`list_image_files`, which reports what it skips).
- `sources`: `ImageData` and the sources behind ``--dataset`` (``digits``, ``tfds:NAME``,
  ``folder:PATH``, ``npz:PATH``), `load_training_data(config)`, `dataset_paths`.
- `pipeline`: images at the GAN's resolution and the seeded, resumable tf.data pipeline.
- `features`: frozen-backbone features computed once and cached on disk, and
  `graph_features`, the one definition of the features the neighbourhood graph and the
  baselines use.

To add a source: a ``load_*`` function in `sources` returning `ImageData` and a branch
in `load_images`. Imports the shared modules and `modeling` (backbone features) only.
"""
