//go:build unix && !linux

package process

import (
	"os"
	"time"
)

// procfsSupported says whether List and Adopt can work here: they find and
// verify processes through Linux's /proc, which this system lacks.
const procfsSupported = false

type procStat struct {
	state   byte
	ppid    int
	pgrp    int
	startID string
}

func (s procStat) gone() bool { return false }

func readStat(int) (procStat, error)             { return procStat{}, errNoProcfs }
func readEnviron(int) (map[string]string, error) { return nil, errNoProcfs }
func procUID(int) (int, error)                   { return 0, errNoProcfs }
func listPIDs() ([]int, error)                   { return nil, errNoProcfs }
func startedAt(string) time.Time                 { return time.Time{} }
func openPidfd(int) (*os.File, error)            { return nil, errNoProcfs }
func waitPidfd(*os.File) error                   { return errNoProcfs }
func pidfdExited(*os.File) bool                  { return true }
func adoptOutput(int) *os.File                   { return nil }

// startIDOf returns no start time: Handle.StartID stays empty here.
func startIDOf(int) (string, error) { return "", nil }

// createUnnamed has no O_TMPFILE to use here: newOutput names the file.
func createUnnamed() (*os.File, *os.File, error) { return nil, nil, nil }

// listensIn cannot tell without /proc: the probe's answer is taken as is.
func listensIn(int, int) (bool, error) { return true, nil }
