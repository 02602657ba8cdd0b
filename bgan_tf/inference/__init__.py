"""Every way an image becomes a code, behind one small interface.

An encoder (`encoders.Encoder`) has ``num_bits``, ``model_id``, ``metadata`` and
``encode(uint8 [N,H,W,3]) -> float32 signs [N, num_bits]``. Implementations:

- `keras_model`: `load_encoder(model_dir)`, a trained model folder rebuilt through
  `modeling.factory`; `model_folder` is the one reader and writer of that folder
  (config.json, metadata.json, weights) and says what makes a folder one.
- `tflite`: `TFLiteEncoder`, an exported ``.tflite`` file run with the LiteRT interpreter.
- `pixel_lsh`: `PixelLSHEncoder`, a training-free random-hyperplane baseline.
- `encoders`: `load_model(spec)`, which picks one of them from a model folder, a
  ``.tflite`` path or ``pixel-lsh:BITS[:SEED]``.

To add a kind of encoder: implement the interface in a module here and teach
`encoders.load_model` its spec; search, serving and evaluation use only this package.
Imports data, modeling and the shared modules only.
"""
