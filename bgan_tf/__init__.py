"""bgan_tf: Binary Generative Adversarial Networks (Song et al., AAAI 2018) in Keras 3.

Learns compact binary codes for images without labels and uses them for
Hamming-distance image retrieval.
"""

__version__ = "0.1.0"
