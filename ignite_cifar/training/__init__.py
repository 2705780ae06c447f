"""Training: one run from launch to its end.

`launch` starts the processes (ignite.distributed), `process` sets each one up, `trainer` builds the engines and
attaches the handlers, `run_end` writes the test evaluation and explanations when training completes. Around them:
`engines` (the train and eval steps), `handlers` (history, checkpoints, TensorBoard, epoch seeding), `schedules`
(ReduceLROnPlateau and warmup), `averaging` (the weight average), `divergence` (the loss guard), `stopping`
(Ctrl-C and SIGTERM at a safe point), `captured_step` (a CUDA-graph step), `optimizer` (optimizer and loss),
`resume`, `lr_find` (the LR range test), `environment` (what a run's numbers depend on), `run_state` and
`tensorboard_views`.

May import: explain, data, model, config and the ground modules. Never the CLI.
"""
