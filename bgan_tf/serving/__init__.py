"""Export for deployment: SavedModel for TF Serving, TFLite, checks and clients.

- `saved_model`: `export_saved_model` writes ``<base>/<version>/`` (``serving_default``:
  uint8 images in; codes, packed bits and hex out; ``encode_bytes``: JPEG/PNG bytes in).
  A version is built hidden and appears only once its checks pass.
- `tflite`: float / dynamic-range int8 / full-int8 conversion (`convert_tflite`, one
  marked set per folder), the normalisation fold for full int8, calibration images.
- `checks`: bit agreement of an export with the Keras encoder, noise and input-rounding
  floors, saved_model_cli.
- `client`: REST and gRPC clients for a running TF Serving.

The TFLite *runtime* is `inference.tflite` (search and evaluation run it too). To add a
variant: configure it in `tflite.tflite_converter` and name it in `TFLITE_VARIANTS`.
Imports inference, data, modeling and the shared modules only.
"""
