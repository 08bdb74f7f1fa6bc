set terminal pngcairo size 800,480
set output 'scaling.png'
set title 'token stage scaled out: producer -> k workers -> sink'
set xlabel 'workers (one process each, 2 threads, 10 ms per item)'
set ylabel 'items/s'
set y2label 'elapsed s'
set y2tics
set ytics nomirror
set yrange [0:*]
set y2range [0:*]
set key left top
set grid
plot 'scaling.tsv' using 1:2 with linespoints title 'items/s', \
  '' using 1:(400*$1) with lines dashtype 2 title 'ideal (400 per worker)', \
  '' using 1:3 axes x1y2 with linespoints title 'elapsed s'
