"""The product surface: settings, the `ilmrec` CLI, the training pipeline, the Gradio UI and the evaluation harness."""
