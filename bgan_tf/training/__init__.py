"""Training BGAN: the model, its losses, the neighbourhood graph and the loop around fit().

- `trainer`: `train(config) -> TrainResult`: features, graph, model, resumable fit, the
  model folder; guards the run folder (`check_run_dir`).
- `bgan`: `BGAN(keras.Model)`: `compile()` takes one optimizer per network and
  `train_step` updates encoder, generator and discriminator.
- `losses`: adversarial, content, neighbourhood (released-code and paper forms),
  quantization.
- `graph`: kNN -> K1/K2 expansion -> sparse positive pairs and the in-graph S_B lookup.
- `distribute`: `make_strategy(name)`, chief detection, dataset sharding, sync BN.
- `callbacks`: beta schedule, reconstruction samples, step-level checkpoints, early
  stopping on a held-out slice of the graph (`GraphEarlyStopping`) and `fit_resumable`.

To add a loss: a function in `losses`, a weight in `BGANConfig`, one term in
`BGAN.train_step`. Imports evaluation (the retrieval metric early stopping monitors),
inference, data, modeling and the shared modules only.
"""
