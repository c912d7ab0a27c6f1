"""Export model directories to other engines' formats: GGUF (llama.cpp, ollama) and ONNX (onnxruntime)."""
