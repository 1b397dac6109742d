"""`keras.utils.get_file` with a download failure said as an `OSError`."""

import keras


def download(fname, origin, local, **kwargs):
    """The cached path of `origin` (downloaded once by `keras.utils.get_file`).

    `get_file` reports an unreachable URL as a bare `Exception` ("URL fetch failure
    on ..."); here it is a `ConnectionError` (an `OSError`) that says how to go on
    without a network: `local` names the argument that takes a local copy.
    """
    try:
        return keras.utils.get_file(fname, origin=origin, **kwargs)
    except Exception as err:
        if type(err) is not Exception:  # OSError, ValueError (a bad hash), ...: as raised
            raise
        raise ConnectionError(
            f"could not download {origin} ({err}). Without network access, download it "
            f"elsewhere and pass the local copy as {local}."
        ) from err
