"""Model -> file converters shared by several backends (ONNX is the common interchange)."""
