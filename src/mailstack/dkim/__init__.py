"""DKIM keys in the boky/postfix layout: `<keydir>/<domain>.private` + `<domain>.txt`."""
