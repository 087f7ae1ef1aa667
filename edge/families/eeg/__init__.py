"""EEG classifiers (EEGNet, Q-EEGNet, Shallow ConvNet, EEG-TCNet): models, training, ONNX export."""
