"""Networks: what an image goes through to become a code, and what G and D are.

- `sign`: the custom-gradient sign activation (tanh / app / ste surrogates) and the
  `SignActivation` layer with its non-trainable, schedulable ``beta``.
- `backbones`: `BackboneSpec` and the backbone factory (``small_cnn``,
  ``mobilenet_v2_torch``, any keras.applications name), preprocessing inside the graph.
- `networks`: the subclassed `Encoder` (preprocess + backbone + hash head + sign),
  `Generator` and `Discriminator`.
- `factory`: the one place that builds a backbone spec, an encoder, a generator and a
  discriminator from a `BGANConfig`.

To add a backbone: teach `backbones` its name and preprocessing; training, loading,
export and search then pick it up from the config through `factory`. Imports only the
shared modules (`errors`, `config`).
"""
