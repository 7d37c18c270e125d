"""A quick integrity check of image files, without decoding them: the header (format, size) and the end of the
file.  It finds truncated and foreign files among thousands in seconds, so that an evaluation can refuse them
before its long run rather than fail at its last clip.  (Damage in the middle of a file passes; the decoder
then names the file when it is read.)"""
from PIL import Image, UnidentifiedImageError

PNG_END = b'IEND\xaeB`\x82'
JPEG_END = b'\xff\xd9'


def image_problem(path):
    """``(None, (height, width))`` for a file that looks whole, else ``(problem, None)`` (one phrase)."""
    try:
        with Image.open(path) as image:  # reads the header only
            kind, (width, height) = image.format, image.size
    except FileNotFoundError:
        return 'file not found', None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return f'not a readable image ({type(err).__name__})', None
    try:
        with open(path, 'rb') as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64))
            tail = f.read()
    except OSError as err:
        return f'cannot be read ({err.strerror or err})', None
    if kind == 'PNG' and not tail.endswith(PNG_END):
        return 'truncated PNG (no IEND chunk at the end)', None
    if kind == 'JPEG' and JPEG_END not in tail[-16:]:
        return 'truncated JPEG (no end-of-image marker)', None
    return None, (height, width)
