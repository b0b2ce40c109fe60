#!/usr/bin/python3
"""A deliberately naive DICOM Upper Layer client that sends what well-behaved tools refuse to send.

usage: raw_scu.py HOST PORT CALLING CALLED MODE [FILE]
  MODE junk-socket     connect and send non-DICOM bytes, then hang up
  MODE tls-stall       send a real TLS ClientHello, then nothing; prints "closed" once the node hangs up
  MODE dribble         send an A-ASSOCIATE-RQ header promising 1,000 bytes, then one byte every 2 s; prints
                       "closed after N s" once the node hangs up
  MODE garbage         associate, send a C-STORE whose data set is random bytes
  MODE truncated FILE  associate, send FILE's data set cut in half
  MODE as-is FILE      associate, send FILE's data set (pixel data dropped); command UIDs from its meta header
Prints "status=0xNNNN", "aborted" or "rejected" and exits 0 when a verdict was read.
RAW_SCU_SOURCE=ADDRESS connects from that local address (e.g. 127.0.0.2, another "host" on loopback).
"""
import os
import socket
import ssl
import struct
import sys
import time

import pydicom
from pydicom.filewriter import write_dataset

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"


def pad_uid(uid: str) -> bytes:
    raw = uid.encode()
    return raw + (b"\0" if len(raw) % 2 else b"")


def element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


def command_set(sop_class: str, sop_instance: str) -> bytes:
    body = (element(0, 0x0002, pad_uid(sop_class)) + element(0, 0x0100, struct.pack("<H", 0x0001))
            + element(0, 0x0110, struct.pack("<H", 1)) + element(0, 0x0700, struct.pack("<H", 0))
            + element(0, 0x0800, struct.pack("<H", 0x0000)) + element(0, 0x1000, pad_uid(sop_instance)))
    return element(0, 0x0000, struct.pack("<I", len(body))) + body


def item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(payload)) + payload


def associate_rq(calling: str, called: str) -> bytes:
    pc = struct.pack(">Bxxx", 1) + item(0x30, CT_IMAGE_STORAGE.encode()) + item(0x40, IMPLICIT_LE.encode())
    user = item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.826.0.1.3680043.10.1443.99")
    body = (struct.pack(">Hxx", 1) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
            + item(0x10, b"1.2.840.10008.3.1.1.1") + item(0x20, pc) + item(0x50, user))
    return struct.pack(">BxI", 0x01, len(body)) + body


def pdata(payload: bytes, control: int) -> bytes:
    pdv = struct.pack(">IB", len(payload) + 2, 1) + bytes([control]) + payload
    return struct.pack(">BxI", 0x04, len(pdv)) + pdv


def read_pdu(sock: socket.socket):
    head = recv_exact(sock, 6)
    kind, length = struct.unpack(">BxI", head)
    return kind, recv_exact(sock, length)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def status_of(command: bytes) -> int:
    pos = 0
    while pos + 8 <= len(command):
        group, elem, length = struct.unpack_from("<HHI", command, pos)
        if (group, elem) == (0, 0x0900):
            return struct.unpack_from("<H", command, pos + 8)[0]
        pos += 8 + length
    raise ValueError("no status in response")


def dataset_bytes(path: str) -> tuple:
    ds = pydicom.dcmread(path, force=True)
    meta = ds.file_meta
    if "PixelData" in ds:
        del ds.PixelData
    fp = pydicom.filebase.DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return fp.getvalue(), str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)


def tls_stall(sock: socket.socket) -> int:
    """Starts a TLS handshake and never finishes it: the server's answer is read and left unanswered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        ctx.wrap_bio(incoming, outgoing).do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock.sendall(outgoing.read())
    sock.settimeout(120)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionError, socket.timeout):
        pass
    print("closed")
    return 0


def dribble(sock: socket.socket) -> int:
    started = time.monotonic()
    try:
        sock.sendall(struct.pack(">BxI", 0x01, 1000))
        sock.settimeout(2)
        while True:
            try:
                if not sock.recv(1):
                    break
            except socket.timeout:
                sock.sendall(b"\0")
    except (ConnectionError, OSError):
        pass
    print("closed after %.1f s" % (time.monotonic() - started))
    return 0


def main() -> int:
    host, port, calling, called, mode = sys.argv[1:6]
    source = os.environ.get("RAW_SCU_SOURCE")
    sock = socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0) if source else None)
    if mode == "dribble":
        return dribble(sock)
    if mode == "junk-socket":
        sock.sendall(os.urandom(1024))
        sock.close()
        print("sent")
        return 0
    if mode == "tls-stall":
        return tls_stall(sock)
    sock.sendall(associate_rq(calling, called))
    kind, _ = read_pdu(sock)
    if kind != 0x02:
        print("rejected")
        return 0
    if mode == "garbage":
        data, sop_class, sop_instance = os.urandom(4096), CT_IMAGE_STORAGE, "1.2.3.4.5.6.7.8.9"
    else:
        data, sop_class, sop_instance = dataset_bytes(sys.argv[6])
        if mode == "truncated":
            data = data[: len(data) // 2]
    sock.sendall(pdata(command_set(sop_class, sop_instance), 0x03))
    sock.sendall(pdata(data, 0x02))
    try:
        kind, payload = read_pdu(sock)
    except (ConnectionError, socket.timeout):
        print("aborted")
        return 0
    if kind != 0x04:
        print("aborted")
        return 0
    print(f"status=0x{status_of(payload[6:]):04X}")
    sock.sendall(struct.pack(">BxI", 0x05, 4) + b"\0" * 4)
    try:
        read_pdu(sock)
    except (ConnectionError, socket.timeout):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
