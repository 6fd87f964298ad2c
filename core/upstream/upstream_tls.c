/*
 * upstream_tls.c — the checks and texts of upstream sessions over TLS.
 *
 * Paho makes its own OpenSSL context at every connect attempt, on its
 * thread, and reports what went wrong only through the error callback. So
 * what can be known before connecting is checked here, at creation, with a
 * throwaway OpenSSL context: that the files exist and parse, that the key
 * matches the certificate and opens with the password given. A mistake
 * then is one clear error at once instead of a reconnect loop. This file
 * never talks to Paho and keeps no state.
 */
#include "upstream.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

bool mqr__upstream_uri_is_tls(const char *uri)
{
    return uri && (strncasecmp(uri, "ssl://", 6) == 0 || strncasecmp(uri, "mqtts://", 8) == 0 ||
                   strncasecmp(uri, "wss://", 6) == 0);
}

/* The first error OpenSSL queued (the most specific), then the queue is
 * emptied. */
static void ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(buf, len, "%s", r);
    else if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown TLS error");
    ERR_clear_error();
}

static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return MQR_EINVAL;
    }
    fclose(f);
    return 0;
}

typedef struct {
    const char *password;
    bool asked;
} pw_t;

/* Never let OpenSSL prompt on the terminal for a key's password. */
static int pw_cb(char *buf, int size, int rwflag, void *arg)
{
    pw_t *pw = arg;
    pw->asked = true;
    if (!pw->password || size <= 0) return 0;
    size_t n = strlen(pw->password);
    if (n >= (size_t)size) n = (size_t)size - 1;
    memcpy(buf, pw->password, n);
    buf[n] = '\0';
    return (int)n;
}

int mqr__upstream_tls_check_files(const mqr_upstream_tls_t *t, char *err, size_t errlen)
{
    if (t->cafile && readable("CA file", t->cafile, err, errlen) < 0) return MQR_EINVAL;
    if (t->capath) {
        struct stat sb;
        if (stat(t->capath, &sb) != 0) {
            snprintf(err, errlen, "CA directory %s: %s", t->capath, strerror(errno));
            return MQR_EINVAL;
        }
        if (!S_ISDIR(sb.st_mode)) {
            snprintf(err, errlen, "CA directory %s: not a directory", t->capath);
            return MQR_EINVAL;
        }
    }
    if (t->cert && readable("certificate", t->cert, err, errlen) < 0) return MQR_EINVAL;
    if (t->key && readable("key", t->key, err, errlen) < 0) return MQR_EINVAL;

    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context");
        return MQR_ENOMEM;
    }
    int rc = MQR_EINVAL;
    char why[200];
    if (t->cafile && SSL_CTX_load_verify_locations(ctx, t->cafile, NULL) != 1) {
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "CA file %s: %s", t->cafile, why);
        goto out;
    }
    if (t->cert) {
        const char *key = t->key ? t->key : t->cert;
        pw_t pw = {.password = t->key_password};
        SSL_CTX_set_default_passwd_cb(ctx, pw_cb);
        SSL_CTX_set_default_passwd_cb_userdata(ctx, &pw);
        if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
            ssl_reason(why, sizeof why);
            snprintf(err, errlen, "certificate %s: %s", t->cert, why);
            goto out;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            unsigned long last = ERR_peek_last_error();
            ssl_reason(why, sizeof why);
            if (ERR_GET_LIB(last) == ERR_LIB_X509 &&
                ERR_GET_REASON(last) == X509_R_KEY_VALUES_MISMATCH)
                snprintf(err, errlen, "key %s does not match certificate %s", key, t->cert);
            else if (pw.asked && !t->key_password)
                snprintf(err, errlen, "key %s is encrypted and no key_password is given", key);
            else if (pw.asked)
                snprintf(err, errlen, "key %s: %s (wrong key_password?)", key, why);
            else
                snprintf(err, errlen, "key %s: %s", key, why);
            goto out;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            ssl_reason(why, sizeof why);
            snprintf(err, errlen, "key %s does not match certificate %s: %s", key, t->cert, why);
            goto out;
        }
    }
    rc = 0;
out:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

int mqr__upstream_tls_check(const mqr_upstream_config_t *cfg, char *err, size_t errlen)
{
    if (errlen) err[0] = '\0';
    const mqr_upstream_tls_t *t = cfg->tls;
    if (!t) return 0;
    int n = cfg->n_uris > 0 ? cfg->n_uris : 1;
    for (int i = 0; i < n; i++) {
        const char *uri = cfg->n_uris > 0 ? cfg->uris[i] : cfg->uri;
        if (!mqr__upstream_uri_is_tls(uri)) {
            snprintf(err, errlen, "TLS settings need ssl://, mqtts:// or wss:// brokers, not %s",
                     uri ? uri : "(none)");
            return MQR_EINVAL;
        }
    }
    if ((t->key || t->key_password) && !t->cert) {
        snprintf(err, errlen, "a TLS key or key password needs a client certificate (cert)");
        return MQR_EINVAL;
    }
    return mqr__upstream_tls_check_files(t, err, errlen);
}

/* OpenSSL 3 writes "<thread>:error:<code>:<library>:<function>:<reason>:
 * <file>:<line>:<data>\n" (1.1 the same fields); keep reason and data. */
void mqr__upstream_tls_reason(const char *line, size_t len, char *out, size_t outlen)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    const char *end = line + len;
    const char *p = NULL;
    for (const char *s = line; s + 7 <= end; s++)
        if (memcmp(s, ":error:", 7) == 0) {
            p = s + 7;
            break;
        }
    /* skip code, library and function */
    for (int i = 0; p && i < 3; i++) {
        p = memchr(p, ':', (size_t)(end - p));
        if (p) p++;
    }
    const char *rend = p ? memchr(p, ':', (size_t)(end - p)) : NULL;
    if (!p || !rend || rend == p) {
        snprintf(out, outlen, "%.*s", (int)len, line);
        return;
    }
    /* skip reason, file and line: the rest is the data */
    const char *data = rend + 1;
    for (int i = 0; data && i < 2; i++) {
        data = memchr(data, ':', (size_t)(end - data));
        if (data) data++;
    }
    if (data && data < end)
        snprintf(out, outlen, "%.*s (%.*s)", (int)(rend - p), p, (int)(end - data), data);
    else
        snprintf(out, outlen, "%.*s", (int)(rend - p), p);
}
