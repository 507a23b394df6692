"""The metrics of a trained model: teacher-forced, against the true source, of generated text."""
