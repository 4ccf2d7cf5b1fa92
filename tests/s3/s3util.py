"""A small S3 client for the tests (Python's standard library only): AWS Signature Version 4,
path-style requests, ListObjectsV2 with paging, GET, PUT, DELETE, bucket creation. It reads the
env file that tests/s3/ceph.sh writes (TELERAD_S3_ENDPOINT, _REGION, _BUCKET, _ACCESS_KEY,
_SECRET_KEY), so that a test can look into the bucket the server under test writes to.

    s3 = S3.from_env_file(path)
    s3.list()            -> {key: size}
    s3.get(key)          -> bytes
"""
import datetime
import hashlib
import hmac
import http.client
import urllib.parse
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    return env


def _quote(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


class S3Error(Exception):
    pass


class S3:
    def __init__(self, endpoint, region, bucket, access_key, secret_key):
        u = urllib.parse.urlsplit(endpoint)
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.hostport = u.netloc
        self.region = region
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key

    @classmethod
    def from_env_file(cls, path, bucket=None):
        e = read_env(path)
        return cls(e["TELERAD_S3_ENDPOINT"], e.get("TELERAD_S3_REGION", "us-east-1"),
                   bucket or e["TELERAD_S3_BUCKET"], e["TELERAD_S3_ACCESS_KEY"],
                   e["TELERAD_S3_SECRET_KEY"])

    def _sign(self, method, path, query, headers, payload_hash):
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        headers = dict(headers)
        headers["host"] = self.hostport
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = payload_hash
        names = sorted(k.lower() for k in headers)
        lower = {k.lower(): str(v).strip() for k, v in headers.items()}
        canonical_headers = "".join("%s:%s\n" % (n, lower[n]) for n in names)
        signed = ";".join(names)
        canonical_query = "&".join("%s=%s" % (_quote(k), _quote(v))
                                   for k, v in sorted(query.items()))
        creq = "\n".join([method, _quote(path, "-_.~/"), canonical_query, canonical_headers,
                          signed, payload_hash])
        scope = "%s/%s/s3/aws4_request" % (day, self.region)
        sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(creq.encode()).hexdigest()])
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                                    "Signature=%s" % (self.access_key, scope, signed, sig))
        return headers, canonical_query

    def request(self, method, key=None, query=None, body=b"", headers=None, bucket=None):
        bucket = bucket or self.bucket
        path = "/" + bucket + ("/" + key if key is not None else "")
        headers, q = self._sign(method, path, query or {}, headers or {},
                                hashlib.sha256(body).hexdigest())
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, _quote(path, "-_.~/") + ("?" + q if q else ""), body=body,
                         headers=headers)
            r = conn.getresponse()
            data = r.read()
            return r.status, dict(r.getheaders()), data
        finally:
            conn.close()

    def list(self, prefix=""):
        """{key: size} of every object (ListObjectsV2, 1000 a page)."""
        out = {}
        token = None
        while True:
            q = {"list-type": "2", "max-keys": "1000"}
            if prefix:
                q["prefix"] = prefix
            if token:
                q["continuation-token"] = token
            status, _, data = self.request("GET", query=q)
            if status != 200:
                raise S3Error("list: HTTP %d %s" % (status, data[:300]))
            root = ET.fromstring(data)
            for c in root.findall(NS + "Contents"):
                out[c.find(NS + "Key").text] = int(c.find(NS + "Size").text)
            if root.findtext(NS + "IsTruncated") != "true":
                return out
            token = root.findtext(NS + "NextContinuationToken")

    def get(self, key):
        status, _, data = self.request("GET", key)
        if status != 200:
            raise S3Error("GET %s: HTTP %d" % (key, status))
        return data

    def put(self, key, body):
        status, _, data = self.request("PUT", key, body=body)
        if status != 200:
            raise S3Error("PUT %s: HTTP %d %s" % (key, status, data[:300]))

    def delete(self, key):
        self.request("DELETE", key)

    def create_bucket(self, name):
        status, _, data = self.request("PUT", bucket=name)
        if status != 200:
            raise S3Error("create bucket %s: HTTP %d %s" % (name, status, data[:300]))
