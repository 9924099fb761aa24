"""train: one cell = one backbone trained with one loss on one split.

One concept per module, imported from where it lives (this package
re-exports nothing):

- :mod:`workflow.training.settings`: defaults of later training keys, the
  device, the input view and the speed settings (shared with embedding);
- :mod:`workflow.training.inputs`: the training images and labels as the
  step reads them (on the device, or in host memory: ``HostImages``);
- :mod:`workflow.training.step`: the models, the optimiser and its schedule,
  one optimisation step (``TrainStep``);
- :mod:`workflow.training.resume`: what a resume checkpoint holds and when
  one is trusted;
- :mod:`workflow.training.loop`: a cell's training put together
  (``build_training``), its epochs (``train_cell``) and the train rule's job
  (``train_job``).
"""
