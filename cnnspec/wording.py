"""How cnnspec words what it prints: counts with their nouns."""


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 layer`, `2 layers`, `1,024 parameters`, `3 classes` (with `words`, the plural where
    it is not the word and an s): every count cnnspec prints with its noun."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"
