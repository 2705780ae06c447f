"""Explanations of a trained model: `mistakes` mines misclassified images, `gradcam` is the hand-written, hook-based
GradCAM (and GradCAM++), `faithfulness` / `faithfulness_verdict` / `faithfulness_report` check the maps (deletion,
insertion, sanity), `probe` follows a few images' maps through training, `own_images` explains a user's pictures,
`explanations` writes them all for one model, `figures` draws every figure, `saved_run` loads a finished run, and
`settings` holds what the explanations are told.

May import: data, model, config and the ground modules. Never training or the CLI: the run calls explain, never the
other way round.
"""
