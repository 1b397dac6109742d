"""The 8×8 handwritten digits bundled with scikit-learn, paired with their English names.

A vector → sequence task (the seed's "una imagen → su título"): a decoder RNN reads one
fixed vector (the 64 pixels) and spells the digit's name character by character.
"""


__all__ = ["DIGIT_NAMES", "load_digit_names"]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digit_names():
    """The 1,797 digits of `sklearn.datasets.load_digits` with their names.

    No download: the images ship inside scikit-learn (the UCI optical recognition of
    handwritten digits test set, 8×8 pixels of 0–16).

    Returns:
        `(images, names, labels)`: float32 `(1797, 64)` scaled to [0, 1], a list of
        names (`"zero"`, …, `"nine"`), and int labels `(1797,)`.

    Example:

    >>> images, names, labels = load_digit_names()  # doctest: +SKIP
    >>> images.shape, names[:3]  # doctest: +SKIP
    ((1797, 64), ['zero', 'one', 'two'])
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "The digits ship with scikit-learn: `pip install scikit-learn` "
            "(or `pip install kerasrnn[recipes]`)."
        ) from err
    digits = load_digits()
    images = (digits.data / 16.0).astype("float32")
    labels = digits.target.astype(int)
    return images, [DIGIT_NAMES[label] for label in labels], labels
