/*
 * tls_certs.h — the certificates the TLS tests use, made once per test
 * program with the openssl command line in a temporary directory: a CA
 * (ca.pem) and a foreign one (other.pem); server.pem/.key naming
 * 127.0.0.1 and localhost, wrong.pem/.key naming elsewhere.invalid, both
 * signed by the CA; client.pem/.key signed by the CA, and client-enc.key,
 * the same key encrypted with the password "s3cret".
 *
 * Included after broker_harness.h (sh()); static inline only.
 */
#ifndef MQR_TLS_CERTS_H
#define MQR_TLS_CERTS_H

#include <stdio.h>
#include <stdlib.h>

static char tls_certs_dir[64];

/* The path of a file in the certificate directory (one of eight buffers,
 * reused in turn). */
static inline const char *cert(const char *name)
{
    static char paths[8][128];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", tls_certs_dir, name);
    return p;
}

static inline int tls_certs_openssl(const char *args)
{
    return sh("cd %s && openssl %s >/dev/null 2>&1", tls_certs_dir, args);
}

/* 0, or -1 when a certificate could not be made. */
static inline int tls_certs_make(void)
{
    snprintf(tls_certs_dir, sizeof tls_certs_dir, "/tmp/mqr-tls-XXXXXX");
    if (!mkdtemp(tls_certs_dir)) return -1;
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    char cmd[512];
    int rc = 0;
    snprintf(cmd, sizeof cmd, "req -x509 %s -keyout ca.key -out ca.pem -days 2 -subj /CN=mqr-ca",
             ec);
    rc |= tls_certs_openssl(cmd);
    snprintf(cmd, sizeof cmd,
             "req -x509 %s -keyout other.key -out other.pem -days 2 -subj /CN=mqr-other-ca", ec);
    rc |= tls_certs_openssl(cmd);
    rc |= sh("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > %s/san.cnf", tls_certs_dir);
    rc |= sh("printf 'subjectAltName=DNS:elsewhere.invalid\\n' > %s/wrong.cnf", tls_certs_dir);
    static const char *const leaf[][3] = {
        {"server", "/CN=localhost", "-extfile san.cnf"},
        {"wrong", "/CN=elsewhere.invalid", "-extfile wrong.cnf"},
        {"client", "/CN=mqr-client", ""},
    };
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "req %s -keyout %s.key -out %s.csr -subj %s", ec, leaf[i][0],
                 leaf[i][0], leaf[i][1]);
        rc |= tls_certs_openssl(cmd);
        snprintf(cmd, sizeof cmd,
                 "x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem "
                 "-days 2 %s",
                 leaf[i][0], leaf[i][0], leaf[i][2]);
        rc |= tls_certs_openssl(cmd);
    }
    rc |= tls_certs_openssl("pkey -in client.key -aes256 -passout pass:s3cret -out client-enc.key");
    return rc == 0 ? 0 : -1;
}

static inline void tls_certs_remove(void)
{
    sh("rm -rf %s", tls_certs_dir);
}

#endif
