"""TLS key schedules and record protection; every primitive comes from ``cryptography``.

How this works: sipflow builds only the TLS constructions around the library's hashes,
HMAC, HKDF and AEAD/CBC ciphers: the TLS 1.0-1.2 PRF (RFC 5246 §5, RFC 2246 §5), the key
block (RFC 5246 §6.3), HKDF-Expand-Label (RFC 8446 §7.1) and traffic keys (§7.3).
:class:`RecordKeys` is one direction's read state: it decrypts record after record with
the implicit sequence number, checks every AEAD tag and CBC MAC/padding, and raises
:class:`~sipflow.errors.ParseError` for a record that does not verify.
"""

from __future__ import annotations

import hmac as std_hmac
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sipflow.errors import ParseError
from sipflow.ingest.tls_codes import TLS12, TLS13, ContentType, Suite

if TYPE_CHECKING:  # cryptography is imported where used: ~0.15 s off every start-up
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
    from cryptography.hazmat.primitives.hashes import HashAlgorithm


def _hash(name: str) -> HashAlgorithm:
    from cryptography.hazmat.primitives import hashes

    algos: dict[str, Callable[[], HashAlgorithm]] = {
        "md5": hashes.MD5, "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    }  # fmt: skip
    return algos[name]()


# -- key derivation (the constructions; every primitive is cryptography's) ----------------


def hash_len(name: str) -> int:
    return _hash(name).digest_size


def _hmac(name: str, key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.hmac import HMAC

    h = HMAC(key, _hash(name))
    h.update(data)
    return h.finalize()


def digest(name: str, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.hashes import Hash

    h = Hash(_hash(name))
    h.update(data)
    return h.finalize()


def _p_hash(name: str, secret: bytes, seed: bytes, n: int) -> bytes:
    """RFC 5246 §5: P_hash(secret, seed) = HMAC(secret, A(1) + seed) + ..., A(i) = HMAC(A(i-1))."""
    out, a = b"", seed
    while len(out) < n:
        a = _hmac(name, secret, a)
        out += _hmac(name, secret, a + seed)
    return out[:n]


def prf(version: int, suite_hash: str, secret: bytes, label: bytes, seed: bytes, n: int) -> bytes:
    """TLS 1.2 PRF with the suite's hash (RFC 5246 §5); MD5 xor SHA-1 before (RFC 2246 §5)."""
    if version >= TLS12:
        return _p_hash(suite_hash, secret, label + seed, n)
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, n)
    sha = _p_hash("sha1", secret[-half:], label + seed, n)
    return bytes(x ^ y for x, y in zip(md5, sha, strict=True))


def hkdf_expand_label(name: str, secret: bytes, label: bytes, context: bytes, n: int) -> bytes:
    """RFC 8446 §7.1: HKDF-Expand(Secret, HkdfLabel(length, "tls13 " + Label, Context))."""
    full = b"tls13 " + label
    info = n.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    return HKDFExpand(_hash(name), n, info).derive(secret)


def master_secret(
    version: int,
    suite: Suite,
    pre: bytes,
    client_random: bytes,
    server_random: bytes,
    ems_transcript: bytes | None = None,
) -> bytes:
    """RFC 5246 §8.1 master secret; RFC 7627 §4 when ``ems_transcript`` (the handshake
    messages up to ClientKeyExchange) is given for an extended master secret session."""
    if ems_transcript is None:
        seed = client_random + server_random
        return prf(version, suite.prf, pre, b"master secret", seed, 48)
    if version >= TLS12:
        session_hash = digest(suite.prf, ems_transcript)
    else:
        session_hash = digest("md5", ems_transcript) + digest("sha1", ems_transcript)
    return prf(version, suite.prf, pre, b"extended master secret", session_hash, 48)


def rsa_premaster(
    keys: Sequence[rsa.RSAPrivateKey], encrypted: bytes, cert_key: object
) -> bytes | None:
    """RFC 5246 §7.4.7.1: the pre-master secret from EncryptedPreMasterSecret. Only the
    keys whose modulus matches the server certificate are tried when one does; else all."""
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    ordered = list(keys)
    if isinstance(cert_key, rsa.RSAPublicKey):
        n = cert_key.public_numbers().n
        ordered = [k for k in ordered if k.public_key().public_numbers().n == n] or ordered
    for key in ordered:
        try:
            pre = key.decrypt(encrypted, padding.PKCS1v15())
        except ValueError:
            continue
        if len(pre) == 48:  # client_version + 46 random bytes
            return pre
    return None


# -- record protection ----------------------------------------------------------------------


class RecordKeys:
    """One direction's read state: decrypt(type, version, fragment) -> (type, plaintext).

    Raises :class:`ParseError` for a record that does not decrypt (bad tag, MAC, padding).
    """

    def __init__(self, suite: Suite, version: int, key: bytes, iv: bytes, mac_key: bytes) -> None:
        self.suite, self.version, self.iv, self.mac_key, self.key = suite, version, iv, mac_key, key
        self.seq = 0
        self.etm = False  # RFC 7366 encrypt-then-MAC (CBC only)
        from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

        self.aead: AESGCM | AESCCM | ChaCha20Poly1305 | None = None
        if suite.cipher == "GCM":
            self.aead = AESGCM(key)
        elif suite.cipher == "CCM":
            self.aead = AESCCM(key)
        elif suite.cipher == "CHACHA":
            self.aead = ChaCha20Poly1305(key)

    def decrypt(self, ctype: int, frag: bytes) -> tuple[int, bytes]:
        from cryptography.exceptions import InvalidTag

        seq, self.seq = self.seq, self.seq + 1
        try:
            if self.version >= TLS13:
                return self._tls13(frag, seq)
            if self.aead is not None:
                return ctype, self._aead12(ctype, frag, seq)
            return ctype, self._cbc(ctype, frag, seq)
        except InvalidTag:
            raise ParseError("record", "authentication tag does not match") from None
        except ValueError as exc:
            raise ParseError("record", str(exc)) from None

    def _nonce(self, seq: int) -> bytes:
        """RFC 8446 §5.3 / RFC 7905 §2: the IV xor the left-padded sequence number."""
        padded = seq.to_bytes(len(self.iv), "big")
        return bytes(a ^ b for a, b in zip(self.iv, padded, strict=True))

    def _tls13(self, frag: bytes, seq: int) -> tuple[int, bytes]:
        assert self.aead is not None
        header = bytes([ContentType.APPLICATION_DATA, 3, 3]) + len(frag).to_bytes(2, "big")
        inner = self.aead.decrypt(self._nonce(seq), frag, header)
        end = len(inner.rstrip(b"\0"))  # RFC 8446 §5.4: zero padding after the real type
        if end == 0:
            raise ParseError("record", "TLSInnerPlaintext has no content type")
        return inner[end - 1], inner[: end - 1]

    def _aad(self, seq: int, ctype: int, length: int) -> bytes:
        """RFC 5246 §6.2.3.3: seq_num + type + version + length."""
        return (
            seq.to_bytes(8, "big")
            + bytes([ctype])
            + self.version.to_bytes(2, "big")
            + (length.to_bytes(2, "big"))
        )

    def _aead12(self, ctype: int, frag: bytes, seq: int) -> bytes:
        assert self.aead is not None
        if self.suite.cipher == "CHACHA":  # RFC 7905 §2: no explicit nonce
            nonce, body = self._nonce(seq), frag
        else:  # RFC 5288 §3: 4-byte salt + 8-byte explicit nonce
            nonce, body = self.iv + frag[:8], frag[8:]
        if len(body) < 16:
            raise ParseError("record", f"AEAD record of {len(frag)} bytes is too short")
        return self.aead.decrypt(nonce, body, self._aad(seq, ctype, len(body) - 16))

    def _cbc(self, ctype: int, frag: bytes, seq: int) -> bytes:
        """RFC 5246 §6.2.3.2 (explicit IV, 1.1+); RFC 2246 §6.2.3.2 (chained IV, 1.0)."""
        assert self.suite.mac is not None
        mac_len = hash_len(self.suite.mac)
        if self.etm:  # RFC 7366 §3: MAC over the ciphertext
            frag, tag = frag[:-mac_len], frag[-mac_len:]
            self._check_mac(self._aad(seq, ctype, len(frag)) + frag, tag)
        if self.version >= 0x0302:
            iv, body = frag[:16], frag[16:]
        else:
            iv, body = self.iv, frag
        if not body or len(body) % 16:
            raise ParseError("record", f"CBC record body of {len(body)} bytes")
        if self.version < 0x0302:
            self.iv = body[-16:]
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        dec = Cipher(algorithms.AES(self.key), modes.CBC(iv)).decryptor()
        plain = dec.update(body) + dec.finalize()
        pad = plain[-1]
        if (
            pad + 1 + (0 if self.etm else mac_len) > len(plain)
            or plain[-pad - 1 :].count(bytes([pad])) != pad + 1
        ):
            raise ParseError("record", "bad CBC padding (wrong key or damaged record)")
        data = plain[: -pad - 1]
        if not self.etm:
            data, tag = data[:-mac_len], data[-mac_len:]
            self._check_mac(self._aad(seq, ctype, len(data)) + data, tag)
        return data

    def _check_mac(self, data: bytes, tag: bytes) -> None:
        assert self.suite.mac is not None
        if not std_hmac.compare_digest(_hmac(self.suite.mac, self.mac_key, data), tag):
            raise ParseError("record", "record MAC does not match (wrong key or damaged record)")


def tls13_keys(suite: Suite, secret: bytes) -> RecordKeys:
    """RFC 8446 §7.3: write key and IV from a traffic secret."""
    key = hkdf_expand_label(suite.prf, secret, b"key", b"", suite.key_len)
    iv = hkdf_expand_label(suite.prf, secret, b"iv", b"", 12)
    return RecordKeys(suite, TLS13, key, iv, b"")


def tls12_keys(
    suite: Suite, version: int, master: bytes, client_random: bytes, server_random: bytes
) -> tuple[RecordKeys, RecordKeys]:
    """RFC 5246 §6.3: key_block = PRF(master, "key expansion", server_random + client_random)."""
    mac = hash_len(suite.mac) if suite.mac else 0
    n = 2 * (mac + suite.key_len + suite.fixed_iv)
    block = prf(version, suite.prf, master, b"key expansion", server_random + client_random, n)
    parts, pos = [], 0
    for size in (mac, mac, suite.key_len, suite.key_len, suite.fixed_iv, suite.fixed_iv):
        parts.append(block[pos : pos + size])
        pos += size
    cmac, smac, ckey, skey, civ, siv = parts
    client = RecordKeys(suite, version, ckey, civ, cmac)
    return client, RecordKeys(suite, version, skey, siv, smac)
