"""Training BGAN: the model, its losses, the neighbourhood graph and the loop around fit().

- `trainer`: `train(config) -> TrainResult`: features, graph, model, resumable fit, the
  model folder.
- `run_folder`: what a run folder of ours is and what a rerun may change (`check_run_dir`:
  same network shapes, same data).
- `bgan`: `BGAN(keras.Model)`: `compile()` takes one optimizer per network and
  `train_step` updates encoder, generator and discriminator.
- `losses`: adversarial, content, neighbourhood (released-code and paper forms),
  quantization.
- `graph`: kNN -> K1/K2 expansion -> sparse positive pairs and the in-graph S_B lookup.
- `knn`: the K1 lists (exact or HNSW FAISS search, its recall) and the sorted pair keys,
  under both `graph` and `diffusion` (manifold-ranking positives).
- `distribute`: `make_strategy(name)`, chief detection, dataset sharding, sync BN.
- `callbacks`: beta schedule, reconstruction samples, step-level checkpoints and
  `fit_resumable`.
- `checkpoints`: restore the newest checkpoint that reads whole and finite (older ones when
  it is damaged), save only finite weights, a full disk as one line.
- `divergence`: `DivergenceGuard` (a NaN or inf loss stops training with one line) and the
  one-code warning at the end of training.

To add a loss: a function in `losses`, a weight in `BGANConfig`, one term in
`BGAN.train_step`. Imports evaluation, inference, data, modeling and the shared modules
only. Knobs whose measurements recorded no gain were removed in issue 28
(`bgan_tf.config.REMOVED_FIELDS`); the commit that had them is named in the results they
measured (``measured_with_commit``).
"""
