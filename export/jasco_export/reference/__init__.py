"""The PyTorch port of audiocraft's JASCO inference path: the numerical reference every artifact is checked against."""
