"""Inference with a trained model: the :class:`~fmolab.inference.predictor.Predictor` (from MLflow or a
checkpoint), image and video deblurring, and the MLflow pyfunc model every logged model carries."""
