"""Export binaries: ``python -m export.saved_model``, ``export.tflite``, ``export.all``.

Thin absl apps over ``bgan_tf.serving`` (saved_model, tflite, checks); flags live in ``flags/export_flags.py``.
"""
