/*
 * cli.h - the telerad command line: one binary, one function per command (layer 4).
 */
#ifndef TR_CLI_H
#define TR_CLI_H

/* Exit statuses shared by every command (documented in docs/cli.md). */
enum cli_exit {
    CLI_OK = 0,
    CLI_FAILED = 1, /* the command ran but failed (bad input, peer refused, ...) */
    CLI_USAGE = 2,  /* wrong options or arguments */
};

int cmd_serve(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_json(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_anonymize(int argc, char **argv);
int cmd_render(int argc, char **argv);
int cmd_echo(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_find(int argc, char **argv);
int cmd_move(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_hl7send(int argc, char **argv);
int cmd_audit(int argc, char **argv);

/* Print "telerad: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
