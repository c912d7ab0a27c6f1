"""Data: tokenized corpora on disk, packing of documents into fixed-length rows, and the training loader."""
