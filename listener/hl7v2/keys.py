"""The MSH keys (MSH-10 control id, MSH-3/MSH-4 sender) between their stored form and people.

Pure: text in, text out.

The store keeps each key as the latin-1 reading of the message's bytes (one character per byte), so
a duplicate is matched byte for byte whatever the message's character set (docs/store.md). People
read and type keys as characters, not bytes: :func:`shown_key` turns a stored key into the text the
sender wrote, and :func:`searched_keys` turns what someone types into the stored forms it can have
(docs/operations.md, "Finding one message"). ``overread show``/``messages``, the ``/api`` message
browser and the console's message browser all go through these two functions.
"""

from __future__ import annotations

from listener.hl7v2.segments import CHARSETS, decode_text

__all__ = ["searched_keys", "shown_key"]

#: The codecs an MSH-18 can name, UTF-8 first: a key typed as text is searched as its bytes in each
#: (most give the same bytes, so a search names one to three stored forms).
_KEY_CODECS = tuple(dict.fromkeys(("utf-8", *(c for c in CHARSETS.values() if c not in ("", "ascii")))))


def shown_key(stored: str, declared: str = "") -> str:
    """A stored key as the sender wrote it: its bytes decoded with the message's character set.

    Args:
        stored: the key as stored (the latin-1 reading of its bytes).
        declared: the message's MSH-18 (upper case, as :attr:`MessageHeader.charset` reads it);
            "" when unknown (the raw body is not at hand, or purged).

    The bytes are read the way the daemon reads the whole message (:func:`decode_text`): valid
    UTF-8 with a character outside ASCII is UTF-8, otherwise the declared character set, and
    when none is declared or it does not fit, latin-1 (the key as stored). A key that is not a
    byte reading (a FHIR client's name, from the configuration) is shown as it is.
    """
    if stored.isascii():
        return stored
    try:
        data = stored.encode("latin-1")
    except UnicodeEncodeError:
        return stored
    return decode_text(data, declared, fallback="latin-1")[0]


def searched_keys(text: str) -> tuple[str, ...]:
    """The stored forms a key typed as ``text`` can have, the text as typed first.

    A control id ``é`` sent in a UTF-8 message is stored as ``Ã©`` (its two bytes read as
    latin-1); in a latin-1 message as ``é``. So a search tries the text as typed and its bytes in
    every character set MSH-18 can declare: whatever :func:`shown_key` shows is found again.
    ASCII text has one form.
    """
    if text.isascii():
        return (text,)
    forms = [text]
    for codec in _KEY_CODECS:
        try:
            forms.append(text.encode(codec).decode("latin-1"))
        except UnicodeEncodeError:
            continue
    return tuple(dict.fromkeys(forms))
