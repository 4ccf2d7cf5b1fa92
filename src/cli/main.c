/*
 * main.c - telerad's entry point: dispatches to the command named by the first argument.
 */
#include "cli.h"
#include "common.h"

#include <stdarg.h>
#include <stdio.h>

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"serve", cmd_serve, "run the server (DICOM store, query and retrieve into the archive)"},
    {"import", cmd_import, "import DICOM files and folders into the archive"},
    {"delete", cmd_delete, "delete studies from the archive"},
    {"anonymize", cmd_anonymize, "de-identify DICOM files (PS3.15 Annex E) into a folder"},
    {"dump", cmd_dump, "list the elements of DICOM files, like dcmdump"},
    {"json", cmd_json, "print a DICOM file as DICOM JSON (PS3.18 F.2)"},
    {"convert", cmd_convert, "write a DICOM file again, in another transfer syntax"},
    {"render", cmd_render, "render a frame of a DICOM image to PNG or JPEG (like dcm2pnm)"},
    {"echo", cmd_echo, "C-ECHO a DICOM node (like echoscu)"},
    {"send", cmd_send, "C-STORE files and folders to a DICOM node (like storescu)"},
    {"find", cmd_find, "C-FIND: query a DICOM node (like findscu)"},
    {"move", cmd_move, "C-MOVE: have a DICOM node send studies to an AE (like movescu)"},
    {"get", cmd_get, "C-GET: retrieve studies from a DICOM node into files (like getscu)"},
    {"hl7send", cmd_hl7send, "send HL7 v2 messages over MLLP and print each ACK"},
    {"audit", cmd_audit, "verify or export the audit log"},
};

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("telerad: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void usage(FILE *out)
{
    fprintf(out, "telerad %s - teleradiology platform\n\n"
                 "usage: telerad <command> [options] [arguments]\n\ncommands:\n",
            TELERAD_VERSION);
    for (size_t i = 0; i < TR_ARRAY_SIZE(commands); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'telerad <command> --help' describes a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return CLI_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("telerad %s\n", TELERAD_VERSION);
        return CLI_OK;
    }
    for (size_t i = 0; i < TR_ARRAY_SIZE(commands); i++) {
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    }
    cli_error("unknown command '%s' (try 'telerad --help')", name);
    return CLI_USAGE;
}
