#!/usr/bin/env bash
# The configuration documented in docs/configuration.md is accepted as written (with the listen
# address overridden from the environment, which also tests the overrides), and mistakes are
# refused with the file and line named.
set -euo pipefail
telerad=$1
docs=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sed -n '/^```ini/,/^```/p' "$docs" | sed '1d;$d' >"$tmp/doc.conf"
out=$(TELERAD_SERVER_DICOM_HOST=127.0.0.1 TELERAD_SERVER_DATA="$tmp/data" \
      "$telerad" serve --config "$tmp/doc.conf" --check)
grep -q "^dicom = 127.0.0.1:11112" <<<"$out"
grep -q "^data = $tmp/data" <<<"$out"
grep -q "^sites = 2 AE titles" <<<"$out"
grep -q "^duplicates = reject" <<<"$out"
grep -q "^store = fs" <<<"$out"

# The S3 object store ([archive] store = s3): described without its keys, which may come from
# the environment or from a credentials file that only its owner may read.
out=$(TELERAD_ARCHIVE_STORE=s3 TELERAD_S3_ACCESS_KEY=AKIDEXAMPLE7 \
      TELERAD_S3_SECRET_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY \
      TELERAD_SERVER_DICOM_HOST=127.0.0.1 TELERAD_SERVER_DATA="$tmp/data" \
      "$telerad" serve --config "$tmp/doc.conf" --check)
grep -q "^store = s3 https://s3.example.org bucket telerad (path-style, region us-east-1)" <<<"$out"
if grep -q "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\|AKIDEXAMPLE7" <<<"$out"; then
    echo "FAIL: serve --check printed an S3 key"; exit 1
fi
printf '[default]\naws_access_key_id = A1\naws_secret_access_key = B2\n' >"$tmp/creds"
chmod 644 "$tmp/creds"
printf '[archive]\nstore = s3\n[s3]\nendpoint = http://127.0.0.1:9\nbucket = b1b\ncredentials_file = %s\n' \
    "$tmp/creds" >"$tmp/s3.conf"
if "$telerad" serve --config "$tmp/s3.conf" --check 2>"$tmp/err"; then
    echo "FAIL: a credentials file readable by everyone accepted"; exit 1
fi
grep -q "readable by every user" "$tmp/err"
chmod 600 "$tmp/creds"
"$telerad" serve --config "$tmp/s3.conf" --check | grep -q "credentials from credentials_file"
printf '[archive]\nstore = s3\n[s3]\nendpoint = http://127.0.0.1:9\nbucket = b1b\n' >"$tmp/nokeys.conf"
if env -u AWS_ACCESS_KEY_ID "$telerad" serve --config "$tmp/nokeys.conf" --check 2>"$tmp/err"; then
    echo "FAIL: S3 without credentials accepted"; exit 1
fi
grep -q "needs credentials" "$tmp/err"

# The documented example listens on 0.0.0.0 with TLS: accepted. Without TLS: refused.
"$telerad" serve --config "$tmp/doc.conf" --check >/dev/null
printf '[server]\ndicom_host = 0.0.0.0\n' >"$tmp/open.conf"
if "$telerad" serve --config "$tmp/open.conf" --check 2>"$tmp/err"; then
    echo "FAIL: 0.0.0.0 without TLS accepted"; exit 1
fi
grep -q "without TLS" "$tmp/err"

# A typo names the file and line.
printf '[server]\ndicom_prot = 1\n' >"$tmp/typo.conf"
if "$telerad" serve --config "$tmp/typo.conf" --check 2>"$tmp/err"; then
    echo "FAIL: unknown key accepted"; exit 1
fi
grep -q "typo.conf:2: unknown setting \"dicom_prot\"" "$tmp/err"

# A bad value from the environment names the variable.
if TELERAD_SERVER_DICOM_PORT=abc "$telerad" serve --config "$tmp/open.conf" --check 2>"$tmp/err"; then
    echo "FAIL: bad port accepted"; exit 1
fi
grep -q "TELERAD_SERVER_DICOM_PORT" "$tmp/err"

# Flags override the file.
printf '[server]\ndicom_port = 2000\n' >"$tmp/port.conf"
"$telerad" serve --config "$tmp/port.conf" --dicom-port 3000 --check | grep -q ":3000"
echo "configuration: ok"
