module github.com/warmpool/warmpool

go 1.26
