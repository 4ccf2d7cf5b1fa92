#!/usr/bin/python3
"""make_pdu_corpus.py - write the seed corpus of the fuzz_pdu target: DICOM upper layer PDU
bodies (PS3.8 9.3; the body is what follows the 6-byte PDU header, and fuzz_pdu gives each
input to every PDU decoder).

    /usr/bin/python3 fuzz/make_pdu_corpus.py [OUTDIR]       (default: fuzz/corpus/pdu)
    /usr/bin/python3 fuzz/make_pdu_corpus.py --capture      (print fresh DCMTK captures)

Seeds:
  dcmtk_*   PDUs captured from DCMTK 3.6.7 (Debian), stored below zlib-compressed and base64
            encoded, header included (the header is dropped when writing). They were captured
            by --capture: a relay on 127.0.0.1 forwards each SCU's association to
            `storescp -aet ARCHIVE` and records every PDU in both directions (TCP_NODELAY=1
            in the environment), with pydicom's CT_small.dcm as the file to send. Running
            --capture again prints the same blocks for the same DCMTK version.
  synth_*   written here from the layouts of PS3.8 9.3 and PS3.7 D.3.3: every user
            information sub-item (user identity types 1, 2, 4, 5, asynchronous window, SOP class
            common extended negotiation, an unknown sub-item), an AC with rejected contexts and
            a user identity response, several PDVs in one P-DATA-TF, A-ASSOCIATE-RJ and
            A-ABORT bodies.

The output is deterministic; files merged into the corpus by fuzzing (see fuzz/run.sh) have
other names and are left alone.
"""
import base64
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

CAPTURED = {
    # echoscu -aet A -aec ARCHIVE (211 bytes)
    "dcmtk_echo_rq": (
        "eNqFjLsKwkAQRc+CvVpY2eQLhtld2Q1WCdFgEFHjo80X+01mt0gREDzDNPeeGUPig4G6b07d+1hM1MUc/rCCjRUn"
        "5U7FqmopXmyedCmGLwrruZDK6kfobrC/wwIqethmwcUgKtF5Vavpdd4g8QXLa9t2j+HQXJ7nwYc4AoOTHgE="
    ),
    # storescp -aet ARCHIVE accepting it (190 bytes)
    "dcmtk_echo_ac": (
        "eNpjYgCCHQyMDAyOQc4enmGuCjDgqIAKGAgAAQYGUUM9Iz0LEwM9QwMDAws9Yz1DEFRkYJAEms/gwMAgiKoAyAtg"
        "YLAKZGBgAUkHMTBIgxQYmZvpGeiZGxkbGBgaAE0BYTM981AGBn5/NzfP4HgXZ98Q73hjM3MA4iwZWQ=="
    ),
    # echoscu's C-ECHO-RQ command (80 bytes)
    "dcmtk_echo_pdata_rq": (
        "eNpjYQACLyB2Y2QGMVmA2ALEYGBiEAKShnpGehYmBnqGBgYGFnqGeoYgKUYmIGEAxAJgFiNIjAPMYgQAxhQEfA=="
    ),
    # storescp's C-ECHO-RSP command (90 bytes)
    "dcmtk_echo_pdata_rsp": (
        "eNpjYQCCECAOYGQGMVmA2AnEYGBiEAKShnpGehYmBnqGBgYGFnqGeoYgKUYmIGHQwMCgAGYxgsQ4wCwQk5MJrB8A"
        "Db4FNQ=="
    ),
    # storescp rejecting findscu -S's context (result 3) (190 bytes)
    "dcmtk_find_ac_rejected": (
        "eNqFjLsOwjAUQ0+BHRgYEAv8wNVNgpqKCZRSUVW8Wsra3+TzSAaQmDiWB8uWR0ReZHBow6l+HtcfqvpSdqH/Zv4w"
        "g4URK8VWxahqIU5M0gaWGWP2MP8dxHSD3R0mxLqFVRpYn4uKt07VaHxJzsX3ML1WVd0NZTg/msHl/g2KnBpn"
    ),
    # storescu -R --user alice --password secret -rsp (323 bytes)
    "dcmtk_store_user_rq": (
        "eNqdTssKglAQPbfXtiJaRJu+YJirpm4Cw5QkxPIR7STERdCq+v+6V3AhLYLOMIvzGkYAEBsIYJv6++gcrFpkeZIG"
        "mV+0HD8wAeaSDHItJsnMLpkk9aimK/AGA4tuYK1sqwkZHjDrmprpbtz/r6vl6Zd8BJITMAA8pMCySTo2MTmGySxZ"
        "fa3XJqcAxkkYRlm58+P8UJq2c1EnewLD6/1W1Rg96+pRvz6vTjPS"
    ),
    # storescu -R --jwt FILE -rsp (369 bytes)
    "dcmtk_store_jwt_rq": (
        "eNqdjjGLwlAQhOehV6uIxWHjL1j2JZrESiUa70U0mphTrhGMBxeM1ir42728gIVYCO6yxXwzAysAiD0EMAjdL/U9"
        "at0nWgbhKHLju8aLqQINSQY5bSbJzA6ZJPXmTUfgBgY+HwOd3G4XIaMP1B9NrXR3Wnqvq3HtCc+B6wIoA32EQLNI"
        "2hYx2YbJLDn/Wp9FdgxUAs9T0WboTpeTjWnZa6D3IdD9Pft/23GSBqmv4ouSs9TvUg4vu5XSkH9Wpyw5eHt1ZEqM"
        "7Lg9eLxb+xnwD+RpQ5w="
    ),
    # storescu -xf CFG Test: roles, extended negotiation (495 bytes)
    "dcmtk_store_cfg_rq": (
        "eNqVkE0KwkAMhd/4s1YRFyKCJwiZ6djpslJbLVLUWrvtyTygp9AZRbAUWvpCFsl7+RYRAMQTAtjl0TEt481PUXLY"
        "/AsdmgILSYoCzSSZOSCPpCt7mQm8wMCyHthaW39CKgTmddNN0q5njbUDDjuAuicwHn+BDVP2AV2AxxUYASFyYOUC"
        "yvjEZJTHLNn+xLVPpgDWLf8Qoj2gIe7A5Jwk6a3aR1lxqjzflB3QwRsnfE7U"
    ),
    # storescp accepting it (254 bytes)
    "dcmtk_store_cfg_ac": (
        "eNpjYgCCHwyMDAyOQc4enmGuCjDg7OaugAwYCAABBgZRQz0jPQsTAz1DAwMDCz1jPUMQVGRgkAaaz+DAwCCMqgDE"
        "A0sz45dmxS0dwMBgFcjAwAJSEARUChI0MjfTM9AzNzI2MDA0ALoChM30zEMZGPj93dw8g+NdnH1DvOONzcwBBKUi"
        "sQ=="
    ),
    # storescu without -R: 128 contexts (9615 bytes)
    "dcmtk_store_128_rq": (
        "eNqlmn9oTWEYx9+FJGnWkmbGpCXJcc65v83a1rWx1nXuufeOJC1JkiRJkiRJWpIkSZIkSZIkSZIkSZIkSZIkSZIk"
        "SdKcu2t/LL7f5+05d922e+/5fPu+z/uc533e967OGNM2ZOqM6S7ll/et7GkdfZQrQamnnB8YfW2Ex1RjpnmO72ST"
        "ruO5rpt1Eo5X/YnIJXVm2LjGtIy9IBV9nBy5KBc9E13GNI69oPqqyofj9Lwfvd3wz9tVUxME0Wx0pUdMTdTz2NQk"
        "caTRb2Jqsp6Hptqn1ERnIlEv+gN7KtarcRynBnGcCRqnRj2PTU2TMyKdIqam63lsqslCNEdMNet5nFEtckr4JKNm"
        "q3EcpznyOBOsRs3V89BUtq0m2gQHig0V5ulYbGa+IEhmrLBAx0IzixfWBJvh6NiCEizS0jh/PGH+PaEiJfQ8jlJK"
        "HCeZtCCjpXGUcuIofRqldj2Po9QhjpNYCjq1NI5StzhKainM63lsqkcSdXlrskzP46nrE4JPsyno19LYUEGQpDEK"
        "Ai2Npy2U1yWfFIGwrOehqY6BmugsmAs+z/DSqhgC2NZqWZUmVGlNDAE8hWsttj9sCgf1PG7h1sk9GIlUcb0ax3Ha"
        "II6TLy4b9Tw2tUm+f1Ks/96s57GpLRaiLjG1Vc/j/nKb0COSPWZhu47FdXyHWIlZ57RTS2NDuwTJDDW0W0tjQ3tE"
        "SdaB79XS2NA+UZItvfu1NDZ0QJQkKR0c1NLQUG6oJjkD9jvknl9xSAlDO52Ha4qtcIRRzKOXJK8rR2JJYGtH7XRJ"
        "QlWOxZLA1o7b6ZLUqpyIJYET/qS0FfKzJOFPaWm8zp2W16kkW+fO6HncOZ2VWx9SOYvn1DguDOeFezudJoXhghLG"
        "di5Kihli55ISxll0WciCZJY2J+EVPY9NXbUQJbMWXtPz2NR1C1G2U7mh57GpmxaibFtwS89jU7ctRNl3BXf0PDZ1"
        "10KUnYHf0/PY1H0LUVIPwgd6Hu9VHgr7DWKo8EjH4gXlsbAipNP025QnahxbeiprstOBZ2oc903P7Zoekt+VF7Ek"
        "cIq/tDigYRXqlZ7HzdxroR2jMxi80dLY0FtBkn6/ErzT0vi48L1w2jeSDuy48EMMAWzro40qKQilTzEEsK3PNqqk"
        "jSp9iSGAbX21USVFofQthgAuoN+lLp8eZRZ/qHFcpX5a/CcAW4h/6Xkcp9/yQNnaN6zG/2+pGNWp0JjxxnSZ0t9q"
        "42fSjutk/ITrem5UZ6rPtJMZMKY+6O3tKw8uzRcq/YOJdOYPqKzEiA=="
    ),
    # getscu -S: 121 contexts, 120 role selections (17435 bytes)
    "dcmtk_get_roles_rq": (
        "eNqtW4+HZVUcP6OSJNtYU+2PmZ3dSpJu95xz7zn3Sto1O7uNtbbdmSlJxtg3797nSZIkSZIkSZIkSZIkSZIkSZJk"
        "JUmSJEmSJOkvqPvenV3WzrufT3xmDPPe+7zzOd9zPt/v+X7POXfKGHNwxkwZc+DEwi1Lty3On/45vLiyvLB65uW8"
        "AT+XGjNjE5cUWZrYNE2LxCd29Nt8sz9l/jWpMbvOBuTNx1kyes8lfr8x28/+ePTKbv22a96ePufthqk+r2Wa3ZrJ"
        "JmXzp+K6AHLlkxr9v1zVhS3X7klcsRh/WUDVv6hzsppfLzKqvhgMYNEgVVyXwMnKZJO1DUyWbf7RUA2mW6q5yZMl"
        "FPx2OIZeNYb1DNZGyEVclxNcpUgbO7A2RI5c78JmeZEO61mCSyTD3p6Wa8fEIRTx7AU8onmqrgSSCEHlwf2rUWyX"
        "xYprgCCsLlb0r4VWqVzqOmiVk1l1PbRKFWtvgFbpuCziSjPZbHmCSzVbOZgtnS4iYMpk0aKETCqbboQ5ZyrSxE14"
        "oXKqTPpmYFVQKX1wAKWBTufCgwVMJlN7vUjk7ap4cZgoHlWL/hLOA1VDeASapZuuo9i9osiVq2O4Ji5EVMfRbOmK"
        "x2VMpdLgKh5AVTp4O9ZFLiqx+nfApVgV4O+EC6SqvroLpTKukClwDctCRbWOqEpZZDpJKFAUmXoboHIUqaJfQf2p"
        "lD4ATFHGNIRMqvT2bsikSm/vgUwiRWzc2zLtnBj7VIvvfThIRA3V8P6Wan4iVTNRzUuRAIcPcHSqEPggGMhClggO"
        "H+IsE2mxehhZlsoc7BFUPzpRJlg/ipeRTOVjj+EaQRQLNx4HcSMEEdETiEgUNeonYdUTVPI7+VTLdcVWXD5TBcL6"
        "aWBSVshSi/oZgkukifpZgktV4z9HcKlSzucJLlHRU79AcKli4IsEl+ps7iWCS1WkvkxwiXy59wooEUQ81av4cEm1"
        "3r+GqVQ7F69jKlV+9gZOdEVxcPgml5+J5F69hS1TSeNtNF+6LYV3MJVKhe9iFarC4HvE1rQqmX4fHluomD4ATLIj"
        "4uGHjGvpKq2PGDrZrvvwY4ZOt0X9CQ4cIt0PPgVnTe28icg+Y8hUR3afM2Sqa2JfMGSidWVwiiETrZnVl7hGVmnx"
        "K+aunUqLXzNkqoXsGzSIugPCb4m7dqrc9ztslmgE179vqS47l6rxK9F+0PoPHSROVEj2fgSFicibej8BHpE9Gz+D"
        "DSerOvT5BRgkqr77v8K9TtXQ/YaGThQU1n/vEraq4v4DzI9oRer9CXhU5dtfKAuTnV9Vf2Mq1VL0D47ZigG81UzP"
        "HTfmfGP2mxObzuRiSNIkOp+mNm1qj9FfSOKKMXvBAyVmCoGa/8eg+e5HOMaYPZ3PXiCu8UMTuEMZ7tDoMYUxZh96"
        "vgDT+YTpeMgZUEl03BEN+YwBtcbNdlw3RwCH+ju64A1nHo+yPTPKne043I5j2rG4HQY0uu/LgGCPiE5neJwJIutT"
        "QjgOOnPYNHwfurdJoFxC+bzDIEKv1jJsjnL5mBJxsYA9YsJZhi0b3XgjOp2XWIwOKw3Gn/GtLqLPGFNSk5GnKJZl"
        "2CpoeGQgHkMshrTdneu6D0MMbxxjrsI3UEgcnK7itIPhtjLYVkpENFcQ6shSIjB4NOIhQETEwSVsGrV78qE7amR8"
        "Ws6AAgNyDMgyoJIBFQwoZ0CeAUUUFyKR42QEhsmVmIgYSPfxRFu430QEDgVlW84s0BZnFhDiyQjDRiJH4jJq+nKU"
        "8rR9o1COQmUUylOoQMTJnKqsLIXCCRuXi4VINNSS7Zy01dn1qStRGMkRoESLh4UpTIFXQ8xiO+2E4TIgAI5LkXCk"
        "SEmj4Vo1ZtuxQ4eWltcOLhxdObLmQ/wPvq/pTA=="
    ),
    # storescu's C-STORE-RQ command, context 41 of its 128 (154 bytes)
    "dcmtk_store_pdata_command": (
        "eNo9TUEOgDAIw2miR8/+wAspbHPze77Agw8W5mJJm6aBMpHhMd776HYyXm4o0GYqrFwTWABUziycjJb6yhBcjOvv"
        "aA7UsfzZitYU+ej3+Ty01XyjQILIiaIl2i+NqvQCH6gQNg=="
    ),
}

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
CT = b"1.2.840.10008.5.1.4.1.1.2"
MR = b"1.2.840.10008.5.1.4.1.1.4"
STUDY_GET = b"1.2.840.10008.5.1.4.1.2.2.3"
IMPLICIT = b"1.2.840.10008.1.2"
EXPLICIT = b"1.2.840.10008.1.2.1"
BIG = b"1.2.840.10008.1.2.2"


def item(kind, value):
    """An item or sub-item: type, reserved, 16-bit length (PS3.8 9.3.2)."""
    return struct.pack(">BBH", kind, 0, len(value)) + value


def u16_prefixed(value):
    return struct.pack(">H", len(value)) + value


def fixed_fields(called, calling):
    """PS3.8 Table 9-11: protocol version, reserved, AE titles, 32 reserved bytes."""
    return struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)


def user_identity_rq(kind, positive, primary, secondary=b""):
    """PS3.7 Table D.3-14."""
    return item(0x58, struct.pack(">BB", kind, positive) + u16_prefixed(primary)
                + u16_prefixed(secondary))


def synth_full_rq(identity):
    contexts = (item(0x20, bytes([1, 0, 0, 0]) + item(0x30, VERIFICATION) + item(0x40, IMPLICIT))
                + item(0x20, bytes([3, 0, 0xFF, 0]) + item(0x30, CT) + item(0x40, EXPLICIT)
                       + item(0x40, BIG) + item(0x40, IMPLICIT + b"\0"))
                + item(0x20, bytes([255, 0, 0, 0]) + item(0x30, STUDY_GET) + item(0x40, EXPLICIT)))
    common = (u16_prefixed(CT) + u16_prefixed(b"1.2.840.10008.4.2")
              + u16_prefixed(u16_prefixed(MR)))
    user = (item(0x51, struct.pack(">I", 65536))
            + item(0x52, b"1.2.826.0.1.3680043.2.1143\0")
            + item(0x53, struct.pack(">HH", 3, 1))
            + item(0x54, u16_prefixed(CT) + b"\x00\x01")
            + item(0x54, u16_prefixed(MR) + b"\x01\x01")
            + item(0x55, b"TELERAD_0.1")
            + item(0x56, u16_prefixed(CT) + b"\x01\x00\x01")
            + item(0x56, u16_prefixed(STUDY_GET) + b"")
            + item(0x57, common)
            + identity
            + item(0x77, b"future sub-item"))
    return (fixed_fields(b"ARCHIVE", b"CT SCANNER 7") + item(0x10, APP_CONTEXT) + contexts
            + item(0x50, user) + item(0x99, b""))


def synth_full_ac():
    contexts = (item(0x21, bytes([1, 0, 0, 0]) + item(0x40, IMPLICIT))
                + item(0x21, bytes([3, 0, 4, 0]) + item(0x40, b""))
                + item(0x21, bytes([5, 0, 3, 0]) + item(0x40, EXPLICIT))
                + item(0x21, bytes([255, 0, 1, 0])))
    user = (item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4")
            + item(0x53, struct.pack(">HH", 1, 1)) + item(0x54, u16_prefixed(CT) + b"\x00\x01")
            + item(0x55, b"PEER 1.0") + item(0x56, u16_prefixed(CT) + b"\x01")
            + item(0x59, u16_prefixed(b"server-response-token")))
    return (fixed_fields(b"ARCHIVE", b"CT SCANNER 7") + item(0x10, APP_CONTEXT) + contexts
            + item(0x50, user))


def pdv(context_id, control, data):
    """PS3.8 Table 9-23 and E.2: item length, context ID, message control header, data."""
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


SYNTHETIC = {
    "synth_rq_username": synth_full_rq(user_identity_rq(1, 0, b"alice")),
    "synth_rq_passcode": synth_full_rq(user_identity_rq(2, 1, b"bob", b"s3cret")),
    "synth_rq_saml": synth_full_rq(user_identity_rq(4, 0, b"<samlp:AuthnRequest ID='x'/>")),
    "synth_rq_jwt": synth_full_rq(user_identity_rq(5, 1, b"eyJhbGciOiJIUzI1NiJ9." * 20)),
    "synth_ac_full": synth_full_ac(),
    "synth_pdata_multi": (pdv(1, 0x01, b"\x00\x00\x00\x00\x04\x00\x00\x00\x38\x00\x00\x00")
                          + pdv(1, 0x03, b"")
                          + pdv(3, 0x00, bytes(range(64)))
                          + pdv(3, 0x02, b"\xfe\xff\x00\xe0")),
    "synth_rj": bytes([0, 1, 1, 3]),
    "synth_abort": bytes([0, 0, 2, 6]),
}


def write_corpus(outdir):
    os.makedirs(outdir, exist_ok=True)
    seeds = {}
    for name, blob in CAPTURED.items():
        pdu = zlib.decompress(base64.b64decode("".join(blob)))
        length = struct.unpack(">I", pdu[2:6])[0]
        assert length == len(pdu) - 6, name
        seeds[name] = pdu[6:]
    seeds.update(SYNTHETIC)
    for name, body in sorted(seeds.items()):
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(body)
    print("make_pdu_corpus.py: %d seeds in %s" % (len(seeds), outdir))


# ---- --capture: record DCMTK's PDUs through a relay to storescp ---------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def relay_one(listener, target_port, pdus):
    """Relay one association between the SCU and storescp, appending (direction, pdu)."""
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", target_port))
    lock = threading.Lock()

    def pump(src, dst, direction):
        while True:
            header = read_exactly(src, 6)
            body = header and read_exactly(src, struct.unpack(">I", header[2:6])[0])
            if body is None:
                break
            with lock:
                pdus.append((direction, header + body))
            try:
                dst.sendall(header + body)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threads = [threading.Thread(target=pump, args=(client, server, "up")),
               threading.Thread(target=pump, args=(server, client, "down"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    client.close()
    server.close()


CFG = """[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[Ctx]
PresentationContext1 = CTImageStorage\\Uncompressed
PresentationContext2 = MRImageStorage\\Uncompressed
PresentationContext3 = VerificationSOPClass\\Uncompressed
[[SCPSCURoleSelection]]
[Roles]
Role1 = CTImageStorage\\BOTH
Role2 = MRImageStorage\\SCP
[[ExtendedNegotiation]]
[ExtNeg]
ExtendedNegotiation1 = CTImageStorage\\0102
[[Profiles]]
[Test]
PresentationContexts = Ctx
SCPSCURoleSelection = Roles
ExtendedNegotiation = ExtNeg
"""


def capture():
    import pydicom.data
    dcm = pydicom.data.get_testdata_file("CT_small.dcm")
    tmp = tempfile.mkdtemp(prefix="pdu-capture-")
    env = dict(os.environ, TCP_NODELAY="1")
    scp_port = free_port()
    scp = subprocess.Popen(["storescp", "-od", tmp, "-aet", "ARCHIVE", str(scp_port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    with open(os.path.join(tmp, "t.cfg"), "w") as f:
        f.write(CFG)
    with open(os.path.join(tmp, "jwt.txt"), "w") as f:
        f.write("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZWxlcmFkIn0.c2lnbmF0dXJl")
    runs = {  # name: (command, [(index of the PDU in the association, seed name)])
        "echo": (["echoscu", "-aet", "A", "-aec", "ARCHIVE"],
                 [(0, "dcmtk_echo_rq"), (1, "dcmtk_echo_ac"), (2, "dcmtk_echo_pdata_rq"),
                  (3, "dcmtk_echo_pdata_rsp")]),
        "find": (["findscu", "-aet", "FINDSCU", "-aec", "ARCHIVE", "-S", "-k",
                  "0008,0052=STUDY"], [(1, "dcmtk_find_ac_rejected")]),
        "user": (["storescu", "-R", "-aet", "STORESCU", "-aec", "ARCHIVE", "--user", "alice",
                  "--password", "secret", "-rsp"], [(0, "dcmtk_store_user_rq")]),
        "jwt": (["storescu", "-R", "-aet", "STORESCU", "-aec", "ARCHIVE", "--jwt",
                 os.path.join(tmp, "jwt.txt"), "-rsp"], [(0, "dcmtk_store_jwt_rq")]),
        "cfg": (["storescu", "-xf", os.path.join(tmp, "t.cfg"), "Test", "-aet", "CFG", "-aec",
                 "ARCHIVE"], [(0, "dcmtk_store_cfg_rq"), (1, "dcmtk_store_cfg_ac")]),
        "store": (["storescu", "-aet", "STORESCU", "-aec", "ARCHIVE"],
                  [(0, "dcmtk_store_128_rq"), (2, "dcmtk_store_pdata_command")]),
        "get": (["getscu", "-aet", "GETSCU", "-aec", "ARCHIVE", "-S", "-k", "0008,0052=STUDY",
                 "-k", "0020,000D=1.2.3"], [(0, "dcmtk_get_roles_rq")]),
    }
    try:
        for name, (command, wanted) in runs.items():
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            pdus = []
            relay = threading.Thread(target=relay_one, args=(listener, scp_port, pdus))
            relay.start()
            args = command + ["127.0.0.1", str(port)]
            if command[0] == "storescu":
                args.append(dcm)
            subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60)
            relay.join(60)
            listener.close()
            for index, seed in wanted:
                pdu = pdus[index][1]
                blob = base64.b64encode(zlib.compress(pdu, 9)).decode()
                print('    "%s": (' % seed)
                for i in range(0, len(blob), 88):
                    print('        "%s"' % blob[i:i + 88])
                print("    ),")
    finally:
        scp.terminate()
        scp.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if sys.argv[1:] == ["--capture"]:
        capture()
        return
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "pdu")
    write_corpus(outdir)


if __name__ == "__main__":
    main()
