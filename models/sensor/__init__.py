"""The predictive-maintenance sensor classifier: data, training, export, quantization.

Run the whole job with ``python -m models.sensor.pipeline``; rebuild the
committed TFLite files with ``python -m models.sensor.tflite_build`` (needs
TensorFlow).
"""
